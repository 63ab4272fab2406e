"""What each public action dataset looks like on disk, and its official splits.

All four ship folder-per-class (``root/<Class>/<clip>.avi``). UCF101 and HMDB51 come with
official train/test split files; KTH's split is by person. A preset only needs ``data.root``;
a missing split file is named in the error.
"""

from __future__ import annotations

import re
from pathlib import Path

from media_retrieval.data.discovery import MediaItem
from media_retrieval.errors import DataError

UCF_CLIP = re.compile(r"v_(?P<cls>[A-Za-z]+)_g(?P<group>\d+)_c(?P<clip>\d+)", re.IGNORECASE)
KTH_CLIP = re.compile(r"person(?P<person>\d+)_(?P<cls>[a-z]+)_d\d", re.IGNORECASE)
# Schüldt et al. 2004: train + validation persons; the rest are test.
KTH_TRAIN_PERSONS = frozenset({11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 23, 24, 25, 1, 4})


def clip_identity(path: str) -> str:
    """UCF clips as ``Class_gXX_cYY`` (case-folded), anything else by file stem: the same UCF50
    clip inside UCF101 has this identity even under another folder."""
    stem = Path(path).stem
    m = UCF_CLIP.search(stem)
    if m:
        return f"{m['cls'].lower()}_g{int(m['group']):02d}_c{int(m['clip']):02d}"
    return stem.lower()


def ucf_clip_identity(path: str) -> str | None:
    """:func:`clip_identity` for UCF-named clips only: a file stem alone (``fi001``) names a clip
    only within its own set, so two sets may both hold a ``fight_0.mp4`` of different footage."""
    return clip_identity(path) if UCF_CLIP.search(Path(path).stem) else None


def _find(root: Path, names: list[str], what: str) -> Path:
    for base in (root, root.parent):
        for name in names:
            for p in (base / name, *base.glob(f"*/{name}")):
                if p.is_file():
                    return p
    raise DataError(f"{what}: expected {names[0]} in {root}, {root.parent} or a sub-folder of them")


def official_roles(
    preset: str, root: str | Path, items: list[MediaItem], split: int = 1
) -> dict[str, str]:
    """``{path: "train" | "test"}`` from a dataset's official split (items not listed: absent)."""
    root = Path(root)
    roles: dict[str, str] = {}
    if preset == "ucf101":
        names = {}
        for kind, fname in (("train", f"trainlist0{split}.txt"), ("test", f"testlist0{split}.txt")):
            path = _find(root, [fname, f"ucfTrainTestlist/{fname}"], f"UCF101 split {split}")
            for line in path.read_text().split("\n"):
                if line.strip():
                    names[Path(line.split()[0]).stem.lower()] = kind
        roles = {
            it.path: names[Path(it.path).stem.lower()]
            for it in items
            if Path(it.path).stem.lower() in names
        }
    elif preset == "hmdb51":
        by_class: dict[str, dict[str, str]] = {}
        for label in sorted({it.label for it in items}):
            fname = f"{label}_test_split{split}.txt"
            path = _find(
                root, [fname, f"testTrainMulti_7030_splits/{fname}"], f"HMDB51 split {split}"
            )
            entries = {}
            for line in path.read_text().split("\n"):
                parts = line.split()
                if len(parts) == 2 and parts[1] in ("1", "2"):
                    entries[Path(parts[0]).stem] = "train" if parts[1] == "1" else "test"
            by_class[label] = entries
        roles = {
            it.path: by_class[it.label][Path(it.path).stem]
            for it in items
            if Path(it.path).stem in by_class.get(it.label, {})
        }
    elif preset == "kth":
        for it in items:
            m = KTH_CLIP.search(Path(it.path).stem)
            if m:
                roles[it.path] = "train" if int(m["person"]) in KTH_TRAIN_PERSONS else "test"
    else:
        raise DataError(f"no official split for preset {preset!r} (known: ucf101, hmdb51, kth)")
    if not roles:
        raise DataError(f"the {preset} split files name none of the clips under {root}")
    return roles
