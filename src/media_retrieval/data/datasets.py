"""Where a DataModule's items come from and how they split: the built-in corpus, any
folder-per-class data, and the paper's cross-dataset protocol. The shared machinery (clips,
feature caches, loaders) is :class:`~media_retrieval.data.datamodule.VideoRetrievalDataModule`;
each class here adds only ``prepare_source``, ``discover_items`` and ``make_split``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from media_retrieval.data.corpus import CorpusSpec, ensure_corpus
from media_retrieval.data.datamodule import UNLABELLED, VideoRetrievalDataModule
from media_retrieval.data.discovery import (
    MediaItem,
    Skipped,
    scan_folder,
    walk_media,
)
from media_retrieval.data.presets import official_roles
from media_retrieval.data.splits import (
    Split,
    cross_dataset_split,
    leave_one_out_split,
    official_split,
    one_dataset_split,
    seen_unseen_split,
)
from media_retrieval.data.video import media_type
from media_retrieval.dataset_sources import missing_root, missing_roots
from media_retrieval.errors import DataError

log = logging.getLogger(__name__)


class BuiltinDataModule(VideoRetrievalDataModule):
    """The generated corpus: train on ``source`` minus ``held_out_classes``; test on those
    held-out source classes plus every class of the ``test`` styles."""

    def __init__(
        self,
        root: str,
        corpus: dict | None = None,
        source: str = "style_a",
        test: tuple[str, ...] | list[str] = ("style_b",),
        held_out_classes: tuple[str, ...] | list[str] = (),
        protocol: str = "split",
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if protocol not in ("split", "leave_one_out"):
            raise DataError(f"data.protocol={protocol!r}; valid: split, leave_one_out")
        self.protocol = protocol
        self.root = Path(root)
        corpus = dict(corpus or {})
        for key in ("classes", "styles", "resolutions", "frame_rates"):
            if key in corpus:
                corpus[key] = tuple(tuple(v) if isinstance(v, list) else v for v in corpus[key])
        self.spec = CorpusSpec(**corpus)
        self.source, self.test = source, list(test)
        self.held_out_classes = list(held_out_classes)
        for style in (source, *self.test):
            if style not in self.spec.styles:
                raise DataError(
                    f"style {style!r} is not generated; valid: {', '.join(self.spec.styles)}"
                )

    def prepare_source(self) -> None:
        ensure_corpus(self.root, self.spec)

    def discover_items(self) -> list[MediaItem]:
        items = []
        for style in (self.source, *self.test):
            found, skipped = scan_folder(self.root / style, style, kinds=("video",), dedupe=False)
            items += found
            self.skipped += skipped
        return items

    def make_split(self, items: list[MediaItem]) -> Split:
        if self.eval_mode and self.protocol == "leave_one_out":
            return leave_one_out_split(items, self.seen_classes or ())
        source = [it for it in items if it.dataset == self.source]
        pool = [it for it in items if it.dataset != self.source]
        return seen_unseen_split(
            source, pool, self.held_out_classes, self.val_fraction, self.query_fraction, self.seed
        )


class FolderDataModule(VideoRetrievalDataModule):
    """Any folder-per-class dataset(s): ``roots: {name: path}`` or ``root: path``.

    Training (``protocol: auto`` or ``seen_unseen``): ``unseen_classes`` are held out of
    training and tested as unseen; the other classes split into train/val/test. Evaluation
    with a trained model (``protocol: auto`` in ``src/eval.py``, or ``leave_one_out``): every
    item is a query against all the others; seen = a class the checkpoint was trained on.
    """

    PROTOCOLS = ("auto", "seen_unseen", "leave_one_out", "official")

    def __init__(
        self,
        roots: dict[str, str] | None = None,
        root: str | None = None,
        unseen_classes: list[str] | float = 0.5,
        test_fraction: float = 0.2,
        protocol: str = "auto",
        kinds: tuple[str, ...] | list[str] = ("video",),
        dedupe: bool = True,
        preset: str | None = None,
        split: int = 1,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.preset, self.official_split_no = preset, split
        if protocol == "official" and preset not in ("ucf101", "hmdb51", "kth"):
            raise DataError(
                "data.protocol=official needs a preset with official splits (ucf101, hmdb51, "
                f"kth), got preset={preset!r}"
            )
        if protocol not in self.PROTOCOLS:
            raise DataError(f"data.protocol={protocol!r}; valid: {', '.join(self.PROTOCOLS)}")
        roots = {str(k): str(v) for k, v in (roots or {}).items()}
        keys = {name: f"data.roots.{name}" for name in roots}
        if root:
            name = Path(str(root)).name or "data"
            roots.setdefault(name, str(root))
            keys.setdefault(name, "data.root")
        if not roots and preset:
            raise DataError(missing_root("data.root", None, preset))
        if not roots:
            raise DataError(
                "data=folder needs data.root=/path/to/<class>/<clip> folders or "
                "data.roots={name: path}"
            )
        problem = missing_roots(
            [(keys[name], path, preset or name) for name, path in roots.items()]
        )
        if problem:
            raise DataError(problem)
        self.roots = roots
        self.unseen_classes = (
            unseen_classes if isinstance(unseen_classes, (int, float)) else list(unseen_classes)
        )
        self.test_fraction, self.protocol = test_fraction, protocol
        self.kinds, self.dedupe = tuple(kinds), dedupe

    def discover_items(self) -> list[MediaItem]:
        if self.labels == "none":
            return self._discover_unlabelled()
        items = []
        for name, path in self.roots.items():
            found, skipped = scan_folder(
                path, name, kinds=self.kinds, dedupe=self.dedupe, hashes=self.hashes
            )
            items += found
            self.skipped += skipped
        if not items:
            raise DataError(
                f"no usable {'/'.join(self.kinds)} files under {', '.join(self.roots.values())}"
            )
        return items

    def _discover_unlabelled(self) -> list[MediaItem]:
        """``data.labels=none``: every media file at any depth (no class folders needed)."""

        items = []
        for name, path in self.roots.items():
            files, skipped = walk_media(path, kinds=tuple(self.kinds))
            self.skipped += skipped
            for f in files:
                rel = f.relative_to(path).with_suffix("").as_posix()
                items.append(MediaItem(str(f), name, UNLABELLED, f"{name}/{rel}", media_type(f)))
        if not items:
            raise DataError(
                f"no usable {'/'.join(self.kinds)} files under {', '.join(self.roots.values())}"
            )
        return items

    def make_split(self, items: list[MediaItem]) -> Split:
        loo = self.protocol == "leave_one_out" or (self.protocol == "auto" and self.eval_mode)
        if loo:
            return leave_one_out_split(items, self.seen_classes or ())
        if self.protocol == "official":
            (root,) = self.roots.values()
            roles = official_roles(self.preset, root, items, self.official_split_no)
            return official_split(
                items, roles, self.unseen_classes, self.val_fraction, self.query_fraction, self.seed
            )
        return one_dataset_split(
            items,
            self.unseen_classes,
            self.val_fraction,
            self.test_fraction,
            self.query_fraction,
            self.seed,
        )


class CrossDataModule(VideoRetrievalDataModule):
    """The paper's cross-dataset protocol: train on ``source`` (its classes with at least
    ``min_clips`` clips), test on every dataset in ``targets``; seen/unseen from ``class_map``
    (``{target_dataset: {target_class: source_class | null}}``).

    Real footage (``experiment=paper_real``) trains on several ``sources`` (``{set: root}``)
    instead, and its class map's ``same_action`` section (which classes of different sets are
    one action) decides what is seen; ``held_out_fraction`` of each training class's videos is
    tested as *seen, held out*. Both go through :func:`cross_dataset_split`."""

    #: class-map sections that are not a target set's {class: source class} map
    SECTIONS = ("same_action", "kinetics400")

    def __init__(
        self,
        source: dict | None,
        targets: dict[str, str],
        class_map: dict | None = None,
        min_clips: int = 1,
        dedupe_by_content: bool = True,
        sources: dict[str, str] | None = None,
        held_out_fraction: float = 0.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if bool(source) == bool(sources):
            raise DataError(
                "data=cross trains on data.source ({name, root}) or on data.sources "
                "({set: root}), exactly one of them"
            )
        if sources:
            self.sources = {str(k): str(v) for k, v in sources.items()}
            keys = {name: f"data.sources.{name}" for name in self.sources}
        else:
            source = dict(source)
            name = str(source.get("name") or Path(str(source.get("root"))).name)
            self.sources, keys = {name: str(source.get("root"))}, {name: "data.source.root"}
        targets = {k: v for k, v in (targets or {}).items() if v}
        problem = missing_roots(
            [
                *((keys[name], path, name) for name, path in self.sources.items()),
                *((f"data.targets.{name}", path, name) for name, path in targets.items()),
            ]
        )
        if problem:
            raise DataError(problem)
        if not targets:
            raise DataError(
                "data=cross needs at least one test dataset: set data.targets.<name>=/path"
            )
        if not 0 <= held_out_fraction < 1:
            raise DataError(f"data.held_out_fraction={held_out_fraction} must be in [0, 1)")
        self.targets = {str(k): str(v) for k, v in targets.items()}
        class_map = dict(class_map or {})
        self.same_action = class_map.get("same_action") or None
        self.kinetics = class_map.get("kinetics400") or None
        self.class_map = {
            str(d): {str(c): (str(v) if v else None) for c, v in (m or {}).items()}
            for d, m in class_map.items()
            if d not in self.SECTIONS
        }
        self.min_clips, self.dedupe_by_content = min_clips, dedupe_by_content
        self.held_out_fraction = held_out_fraction

    def discover_items(self) -> list[MediaItem]:
        items = []
        for name, path in (*self.sources.items(), *self.targets.items()):
            found, skipped = scan_folder(path, name, kinds=("video",), hashes=self.hashes)
            items += found
            self.skipped += skipped
        return items

    def make_split(self, items: list[MediaItem]) -> Split:
        source = [it for it in items if it.dataset in self.sources]
        targets = [it for it in items if it.dataset not in self.sources]
        hashes = {it.path: self.hashes(it.path) for it in items} if self.dedupe_by_content else None
        split, excluded = cross_dataset_split(
            source,
            targets,
            self.class_map,
            self.min_clips,
            self.val_fraction,
            self.query_fraction,
            self.seed,
            hashes,
            same_action=self.same_action,
            held_out_fraction=self.held_out_fraction,
            kinetics=self.kinetics,
        )
        for path, reason in excluded:
            log.warning("test pool: leaving out %s (%s)", path, reason)
            self.skipped.append(Skipped(path, reason))
        return split
