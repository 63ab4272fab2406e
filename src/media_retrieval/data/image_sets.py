"""The paper's image sets (Table II) as folder-per-class image datasets.

CIFAR10 ships as pickled Python batches. torchvision's loader ``pickle.load``s them; we read
them with an unpickler that can only rebuild numpy arrays, dicts, lists and bytes, so a
tampered batch cannot execute code. The images are exported once to PNG under
``<root>/<split>/<class>/``, after which CIFAR10 is an ordinary image folder and the rest of
the pipeline (splits, feature cache, retrieval) is the video one with one frame per clip.

Oxford 5K ships as one flat image folder plus ground-truth lists
(``<landmark>_<n>_{good,ok,junk,query}.txt``); :func:`arrange_oxford5k` links its good/ok
images into ``<landmark>/`` folders (junk and distractors are left out).
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from media_retrieval.data.datasets import FolderDataModule
from media_retrieval.errors import DataError

log = logging.getLogger(__name__)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_DIR = "cifar-10-batches-py"


class _ArraysOnly(pickle.Unpickler):
    """Rebuilds plain containers and numpy arrays; any other class is refused.
    (``_codecs.encode`` only turns text into bytes: protocol-2 pickles use it for bytes.)"""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a data file")


def load_cifar_batch(path: str | Path) -> dict:
    """One CIFAR python batch (or ``batches.meta``) as a dict with str keys."""
    try:
        with open(path, "rb") as fh:
            d = _ArraysOnly(io.BytesIO(fh.read()), encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CIFAR batch ({exc})") from exc
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def ensure_cifar10(root: str | Path, download: bool = True) -> Path:
    """The extracted batches folder, downloaded with torchvision's helper when absent."""
    root = Path(root)
    batches = root / CIFAR10_DIR
    if (batches / "batches.meta").is_file():
        return batches
    if download:
        try:
            from torchvision.datasets.utils import download_and_extract_archive  # noqa: PLC0415 - only the CIFAR-10 download needs it

            download_and_extract_archive(CIFAR10_URL, str(root), md5=CIFAR10_MD5)
        except Exception as exc:
            raise DataError(
                f"CIFAR10 is not at {batches} and cannot be downloaded ({type(exc).__name__}): "
                f"fetch {CIFAR10_URL} and extract it into {root}"
            ) from exc
    if not (batches / "batches.meta").is_file():
        raise DataError(
            f"CIFAR10 is not at {batches}: fetch {CIFAR10_URL} and extract it into {root}"
        )
    return batches


def export_cifar10(
    root: str | Path, out: str | Path, train_classes: list[str] | None = None, download: bool = True
) -> Path:
    """PNG folders ``out/<class>/``: training-batch images of ``train_classes`` and test-batch
    images of the other classes (the paper: train on half the classes, retrieve on the test
    images of the other half). ``None``: every class from both. Written once (marker file)."""

    out = Path(out)
    marker = out / ".complete"
    if marker.is_file():
        return out
    batches = ensure_cifar10(root, download)
    names = [
        n.decode() if isinstance(n, bytes) else n
        for n in load_cifar_batch(batches / "batches.meta")["label_names"]
    ]
    files = sorted(batches.glob("data_batch_*")) + [batches / "test_batch"]
    n = 0
    for f in files:
        b = load_cifar_batch(f)
        test = f.name == "test_batch"
        data = np.asarray(b["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        for i, (img, label) in enumerate(zip(data, b["labels"], strict=True)):
            cls = names[label]
            if train_classes is not None and (cls in train_classes) == test:
                continue
            d = out / cls
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(d / f"{f.name}_{i:05d}.png")
            n += 1
    marker.write_text(f"{n}\n")
    log.info("exported %d CIFAR10 images to %s", n, out)
    return out


class Cifar10DataModule(FolderDataModule):
    """CIFAR10 for image retrieval: train on ``train_classes``; the test pool is the test
    images of the other classes (all unseen). Images are one-frame clips (``frames: 1``)."""

    CLASSES = (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    )

    def __init__(
        self, cifar_root: str, train_classes: list[str], download: bool = True, **kwargs
    ) -> None:
        unknown = set(train_classes) - set(self.CLASSES)
        if unknown:
            raise DataError(
                f"data.train_classes: {sorted(unknown)} are not CIFAR10 classes "
                f"({', '.join(self.CLASSES)})"
            )
        self.cifar_root, self.train_classes_, self.download = (
            cifar_root,
            list(train_classes),
            download,
        )
        export = Path(cifar_root) / "png"
        export.mkdir(parents=True, exist_ok=True)
        unseen = [c for c in self.CLASSES if c not in train_classes]
        for fixed in (
            "root",
            "roots",
            "unseen_classes",
            "kinds",
        ):  # decided here, not by the base config
            kwargs.pop(fixed, None)
        super().__init__(root=str(export), unseen_classes=unseen, kinds=("image",), **kwargs)

    def prepare_source(self) -> None:
        export_cifar10(
            self.cifar_root, Path(self.cifar_root) / "png", self.train_classes_, self.download
        )


def arrange_oxford5k(images_dir: str | Path, gt_dir: str | Path, out_dir: str | Path) -> Path:
    """``out_dir/<landmark>/<image>.jpg`` links for every good/ok image of each landmark."""
    images_dir, gt_dir, out_dir = Path(images_dir), Path(gt_dir), Path(out_dir)
    if (out_dir / ".complete").is_file():
        return out_dir
    if not images_dir.is_dir() or not gt_dir.is_dir():
        raise DataError(
            f"Oxford 5K needs {images_dir} (oxbuild_images) and {gt_dir} (gt_files_170407): get "
            "them "
            "from https://www.robots.ox.ac.uk/~vgg/data/oxbuildings/"
        )
    n = 0
    for gt in sorted(gt_dir.glob("*_[0-9]*_good.txt")) + sorted(gt_dir.glob("*_[0-9]*_ok.txt")):
        landmark = gt.name.rsplit("_", 2)[0]
        for name in gt.read_text().split():
            src = images_dir / f"{name}.jpg"
            dst = out_dir / landmark / src.name
            if src.is_file() and not dst.exists():
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(src, dst)
                except OSError:
                    dst.write_bytes(src.read_bytes())
                n += 1
    if not n:
        raise DataError(f"no Oxford 5K ground-truth images found from {gt_dir} in {images_dir}")
    (out_dir / ".complete").write_text(f"{n}\n")
    return out_dir


class Oxford5kDataModule(FolderDataModule):
    """Oxford 5K buildings as 11 landmark classes (images only)."""

    def __init__(self, images_dir: str, gt_dir: str, arranged_dir: str, **kwargs) -> None:
        self.images_dir, self.gt_dir, self.arranged_dir = images_dir, gt_dir, arranged_dir
        Path(arranged_dir).mkdir(parents=True, exist_ok=True)
        for fixed in ("root", "roots", "kinds"):
            kwargs.pop(fixed, None)
        super().__init__(root=arranged_dir, kinds=("image",), **kwargs)

    def prepare_source(self) -> None:
        arrange_oxford5k(self.images_dir, self.gt_dir, self.arranged_dir)
