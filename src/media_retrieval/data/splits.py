"""Train / val / query / gallery splits with seen-unseen flags, written to ``split.csv``.

A split is a table: every row is a :class:`MediaItem` plus ``role`` and ``seen``; its row
number is the ``sample_id`` that travels with every embedding, so evaluation on N processes
can de-duplicate and realign by id.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np

from media_retrieval.data.discovery import MediaItem
from media_retrieval.data.presets import ucf_clip_identity
from media_retrieval.errors import DataError
from media_retrieval.utils.files import atomic_path

# "both": a leave-one-out member, query and gallery at once (itself excluded when ranking).
ROLES = ("train", "val", "query", "gallery", "both")
TEST_ROLES = ("query", "gallery", "both")


@dataclass(frozen=True)
class SplitItem(MediaItem):
    role: str = "gallery"
    seen: bool = True
    original_label: str = ""  # the dataset's own class name when a class map renamed it
    #: a clip of a training class from a training set, kept out of training and validation to be
    #: tested ("seen, held out"; the cross-set seen classes are the others with ``seen``)
    held_out: bool = False
    #: a test clip whose class the class map's ``kinetics400`` section names: a video encoder
    #: pretrained on Kinetics-400 (model=i3d) has seen it, so its unseen rows are split by this
    kinetics: bool = False


@dataclass
class Split:
    items: list[SplitItem]
    train_classes: list[str]

    def __post_init__(self) -> None:
        # Global class vocabulary: retrieval compares labels across every role and dataset.
        self.classes = sorted({it.label for it in self.items})
        self.class_index = {c: i for i, c in enumerate(self.classes)}
        self.train_index = {c: i for i, c in enumerate(self.train_classes)}

    def ids(self, *roles: str) -> list[int]:
        return [i for i, it in enumerate(self.items) if it.role in roles]

    def write_csv(self, path: str | Path) -> None:
        names = ["sample_id"] + [f.name for f in fields(SplitItem)]
        with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=names)
            w.writeheader()
            for i, it in enumerate(self.items):
                w.writerow({"sample_id": i, **asdict(it)})

    @classmethod
    def read_csv(cls, path: str | Path) -> Split:
        path = Path(path)
        if not path.is_file():
            raise DataError(f"split file {path} not found")
        items, train = [], set()
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                row.pop("sample_id", None)
                for key in ("start_s", "end_s"):
                    row[key] = float(row[key]) if row[key] not in ("", "None") else None
                row["chunk"] = int(row["chunk"])
                # flags are written as True/False; older files lack held_out and kinetics
                for flag in ("seen", "held_out", "kinetics"):
                    row[flag] = row.get(flag, "False") in ("True", "true", "1")
                row.setdefault("original_label", "")
                it = SplitItem(**row)
                items.append(it)
                if it.role in ("train", "val"):
                    train.add(it.label)
        return cls(items, sorted(train))


def _stratified_pick(
    items: Sequence[MediaItem], fraction: float, rng: np.random.Generator, min_per_class: int = 1
) -> set[int]:
    """Indices (into ``items``) of a per-class random ``fraction`` of *videos* (all chunks of a
    picked video), at least ``min_per_class`` videos when a class has more than one (a class
    must keep a member on the other side). Chunks of one video never straddle two roles."""
    by_class: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
    for i, it in enumerate(items):
        by_class[it.label][it.video_id].append(i)
    picked: set[int] = set()
    for label in sorted(by_class):
        videos = sorted(by_class[label])
        n = int(round(fraction * len(videos)))
        n = min(max(n, min_per_class), len(videos) - 1) if len(videos) > 1 else 0
        perm = rng.permutation(len(videos))
        for j in perm[:n]:
            picked.update(by_class[label][videos[j]])
    return picked


def _assemble(
    trainval: Sequence[MediaItem],
    val: set[int],
    pool: Sequence[MediaItem],
    queries: set[int],
    train_classes: list[str],
) -> Split:
    """A split from its chosen parts: ``trainval`` (``val`` picks validation) and the test
    ``pool`` (``queries`` picks the queries; seen = a class trained on)."""
    trained = set(train_classes)
    items = [
        SplitItem(**asdict(it), role="val" if i in val else "train", seen=True)
        for i, it in enumerate(trainval)
    ]
    items += [
        SplitItem(
            **asdict(it), role="query" if i in queries else "gallery", seen=it.label in trained
        )
        for i, it in enumerate(pool)
    ]
    return Split(items, train_classes)


def _at_least_two(
    picked: set[int], items: Sequence[MediaItem], rng: np.random.Generator
) -> set[int]:
    """``picked`` (validation), grown to 2 videos where the items allow: validation ranks each
    of its clips against the others, so 1 clip cannot choose a checkpoint. A video is taken from
    the class with the most videos left in training, never its last one."""
    by_video: dict[str, list[int]] = defaultdict(list)
    for i, it in enumerate(items):
        by_video[it.video_id].append(i)
    picked = set(picked)
    while len({items[i].video_id for i in picked}) < 2:
        left: dict[str, list[str]] = defaultdict(list)
        for vid, idx in sorted(by_video.items()):
            if not picked & set(idx):
                left[items[idx[0]].label].append(vid)
        label = max(sorted(left), key=lambda c: len(left[c]), default=None)
        if label is None or len(left[label]) < 2:
            break
        picked.update(by_video[left[label][int(rng.integers(len(left[label])))]])
    return picked


def held_out_count(fraction: float, n_classes: int) -> int:
    """How many of ``n_classes`` a fraction holds out as unseen: rounded, but leaving at least 2
    classes to train on where there are 3 or more (one class gives a classifier nothing to tell
    apart: a folder of 3 classes at 0.5 holds out 1, not 2)."""
    n = int(round(fraction * n_classes))
    return min(n, n_classes - 2) if n_classes >= 3 and fraction < 1 else n


def seen_unseen_split(
    source: Iterable[MediaItem],
    test_pool: Iterable[MediaItem],
    held_out_classes: Sequence[str],
    val_fraction: float = 0.1,
    query_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """The built-in protocol: train on the source minus held-out classes, test on the rest.

    Source clips of trained classes split into train/val; source clips of held-out classes
    join the test pool. In the test pool a stratified ``query_fraction`` of every class are
    queries and the rest gallery; a class is *seen* when it was trained on.
    """
    rng = np.random.default_rng(seed)
    source = list(source)
    held = set(held_out_classes)
    unknown = held - {it.label for it in source}
    if unknown:
        raise DataError(f"held-out classes not in the source dataset: {sorted(unknown)}")
    trained = [it for it in source if it.label not in held]
    if not trained:
        raise DataError("every source class is held out: nothing left to train on")
    train_classes = sorted({it.label for it in trained})
    val = _at_least_two(_stratified_pick(trained, val_fraction, rng), trained, rng)
    pool = [it for it in source if it.label in held] + list(test_pool)
    return _assemble(trained, val, pool, _stratified_pick(pool, query_fraction, rng), train_classes)


def one_dataset_split(
    items: Sequence[MediaItem],
    unseen_classes: Sequence[str] | float = 0.5,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    query_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """Seen/unseen protocol on a single folder of classes.

    ``unseen_classes`` (names, or a fraction of the classes chosen with ``seed``) are held out of
    training and go whole into the test pool; the other classes' clips split into train / val /
    test (``test_fraction`` of each class joins the pool as *seen*). In the pool a stratified
    ``query_fraction`` per class are queries, the rest gallery.
    """
    rng = np.random.default_rng(seed)
    classes = sorted({it.label for it in items})
    if isinstance(unseen_classes, (int, float)):
        if not 0 <= unseen_classes < 1:
            raise DataError(
                f"data.unseen_classes as a fraction must be in [0, 1), got {unseen_classes}"
            )
        n = held_out_count(unseen_classes, len(classes))
        unseen = {classes[i] for i in rng.permutation(len(classes))[:n]}
    else:
        unseen = set(unseen_classes)
        unknown = unseen - set(classes)
        if unknown:
            raise DataError(
                f"data.unseen_classes not found among the classes {classes}: {sorted(unknown)}"
            )
    seen_items = [it for it in items if it.label not in unseen]
    if not seen_items:
        raise DataError(
            "every class is unseen: nothing left to train on (lower data.unseen_classes)"
        )
    test_pick = _stratified_pick(seen_items, test_fraction, rng)
    trainval = [it for i, it in enumerate(seen_items) if i not in test_pick]
    val = _at_least_two(_stratified_pick(trainval, val_fraction, rng), trainval, rng)
    pool = [it for it in items if it.label in unseen] + [seen_items[i] for i in sorted(test_pick)]
    queries = _stratified_pick(pool, query_fraction, rng)
    return _assemble(trainval, val, pool, queries, sorted({it.label for it in trainval}))


def unlabelled_split(items: Sequence[MediaItem], val_fraction: float = 0.1, seed: int = 0) -> Split:
    """``data.labels=none``: no classes to hold out or score, so every video trains except a
    random ``val_fraction`` of videos (at least two where there are four or more: the label-free
    validation metric finds each held-out video's second view among the others')."""
    rng = np.random.default_rng(seed)
    videos = sorted({it.video_id for it in items})
    n_val = int(round(val_fraction * len(videos)))
    n_val = max(n_val, 2) if len(videos) >= 4 else n_val
    n_val = min(n_val, len(videos) - 1)
    val = {videos[j] for j in rng.permutation(len(videos))[:n_val]}
    out = [
        SplitItem(**asdict(it), role="val" if it.video_id in val else "train", seen=False)
        for it in items
    ]
    return Split(out, [])


def leave_one_out_split(items: Sequence[MediaItem], seen_classes: Sequence[str] = ()) -> Split:
    """Every item is a query against all the others (evaluation of a trained model on any folder);
    a class is seen when the model was trained on it."""
    seen = set(seen_classes)
    return Split(
        [SplitItem(**asdict(it), role="both", seen=it.label in seen) for it in items], sorted(seen)
    )


def official_split(
    items: Sequence[MediaItem],
    roles: dict[str, str],
    unseen_classes: Sequence[str] | float = 0.0,
    val_fraction: float = 0.1,
    query_fraction: float = 0.1,
    seed: int = 0,
) -> Split:
    """A dataset's official train/test lists: train/val from its train list (minus any
    ``unseen_classes``), the test pool from its test list; seen = trained on."""
    rng = np.random.default_rng(seed)
    classes = sorted({it.label for it in items})
    if isinstance(unseen_classes, (int, float)):
        n = int(round(float(unseen_classes) * len(classes)))
        unseen = {classes[i] for i in rng.permutation(len(classes))[:n]}
    else:
        unseen = set(unseen_classes)
    trainval = [it for it in items if roles.get(it.path) == "train" and it.label not in unseen]
    if not trainval:
        raise DataError("the official split leaves nothing to train on")
    pool = [it for it in items if roles.get(it.path) == "test"]
    val = _at_least_two(_stratified_pick(trainval, val_fraction, rng), trainval, rng)
    queries = _stratified_pick(pool, query_fraction, rng)
    train_classes = sorted({it.label for it in trainval})
    out = [
        SplitItem(**asdict(it), role="val" if i in val else "train")
        for i, it in enumerate(trainval)
    ]
    out += [
        SplitItem(
            **asdict(it),
            role="query" if i in queries else "gallery",
            seen=it.label in set(train_classes),
        )
        for i, it in enumerate(pool)
    ]
    return Split(out, train_classes)


def same_action_index(same_action: dict | None) -> dict[tuple[str, str], str]:
    """``{(set, class): name}`` from a class map's symmetric ``same_action`` list
    (``{name: [set/class, ...]}``, ``configs/data/class_map/real_clips.yaml``): the classes of
    different sets that denote one action. Each member appears once; anything else is refused."""
    index: dict[tuple[str, str], str] = {}
    for name, listed in (same_action or {}).items():
        # a list from YAML, or an OmegaConf ListConfig from a composed config
        members = [] if isinstance(listed, (str, bytes)) else list(listed or [])
        if len(members) < 2:
            raise DataError(f"same_action.{name}: needs a list of two or more set/class names")
        for member in members:
            set_name, _, cls = str(member).partition("/")
            if not set_name or not cls or (set_name, cls) in index:
                raise DataError(
                    f"same_action.{name}: {member!r} is not set/class or is listed twice"
                )
            index[(set_name, cls)] = str(name)
    return index


def cross_dataset_split(
    source: Sequence[MediaItem],
    targets: Sequence[MediaItem],
    class_map: dict[str, dict[str, str | None]],
    min_clips: int = 1,
    val_fraction: float = 0.1,
    query_fraction: float = 0.1,
    seed: int = 0,
    content_hash: dict[str, str] | None = None,
    *,
    same_action: dict | None = None,
    held_out_fraction: float = 0.0,
    kinetics: dict | None = None,
) -> tuple[Split, list[tuple[str, str]]]:
    """The paper's protocol: train on the source's classes with >= ``min_clips`` clips (90/10
    train/val), test on the other datasets.

    No training or validation clip may reach the test pool: a target clip with the identity of
    a source clip (UCF ``Class_gXX_cYY``, so UCF50 clips inside UCF101 are caught) or the same
    content hash is left out and reported. A target class is *seen* when ``class_map``
    maps it to a trained source class; it then takes that class's name, so seen classes match
    across datasets. Unmapped classes keep ``<dataset>/<class>``. Returns the split and the
    (path, reason) of excluded clips.

    Several source sets (real footage) go through the same path: their classes are named
    ``<set>/<class>``, except those of one ``same_action`` entry, which share its name; a
    target class of such an entry is seen when the entry is a trained class (the map is derived
    from the symmetric list, :func:`same_action_index`). With ``held_out_fraction``, that share
    of each training class's videos is kept out of training and validation and tested as
    *seen, held out* (``SplitItem.held_out``), beside the cross-set seen classes.
    ``kinetics`` (``{set: {class: Kinetics-400 class}}``, the class map's section) flags the
    test clips of Kinetics classes (``SplitItem.kinetics``).
    """

    rng = np.random.default_rng(seed)
    same = same_action_index(same_action)
    several = len({it.dataset for it in source}) > 1

    def trained_name(it: MediaItem) -> str:
        return same.get((it.dataset, it.label)) or (
            f"{it.dataset}/{it.label}" if several else it.label
        )

    relabelled = [(replace(it, label=trained_name(it)), it.label) for it in source]
    source = [it for it, _ in relabelled]
    original_source = {id(it): label for it, label in relabelled}  # the set's own class name
    counts: dict[str, int] = defaultdict(int)
    for it in source:
        counts[it.label] += 1
    train_classes = sorted(c for c, n in counts.items() if n >= min_clips)
    if not train_classes:
        raise DataError(f"no source class has at least data.min_clips={min_clips} clips")
    trained = set(train_classes)
    trainval = [it for it in source if it.label in trained]
    held_idx = _stratified_pick(trainval, held_out_fraction, rng) if held_out_fraction else set()
    held = [it for i, it in enumerate(trainval) if i in held_idx]
    trainval = [it for i, it in enumerate(trainval) if i not in held_idx]
    val = _stratified_pick(trainval, val_fraction, rng)
    hashes = content_hash or {}
    used_ids = {i: it.path for it in trainval if (i := ucf_clip_identity(it.path))}
    used_hashes = {hashes[it.path]: it.path for it in trainval if it.path in hashes}
    pool = list(held)
    originals = [original_source[id(it)] for it in held]
    excluded = []
    for it in targets:
        twin = used_ids.get(ucf_clip_identity(it.path) or "") or used_hashes.get(
            hashes.get(it.path, "")
        )
        if twin:
            excluded.append((it.path, f"same clip as training/validation clip {twin}"))
            continue
        mapped = (class_map.get(it.dataset) or {}).get(it.label) or same.get((it.dataset, it.label))
        pool.append(replace(it, label=mapped or f"{it.dataset}/{it.label}"))
        originals.append(it.label)
    queries = _stratified_pick(pool, query_fraction, rng)
    in_kinetics = {(d, c) for d, m in (kinetics or {}).items() for c in (m or {})}
    out = [
        SplitItem(
            **asdict(it),
            role="val" if i in val else "train",
            original_label=original_source[id(it)] if several or same else "",
        )
        for i, it in enumerate(trainval)
    ]
    out += [
        SplitItem(
            **asdict(it),
            role="query" if i in queries else "gallery",
            seen=it.label in trained,
            original_label=original,
            held_out=i < len(held),
            kinetics=(it.dataset, original) in in_kinetics,
        )
        for i, (it, original) in enumerate(zip(pool, originals, strict=True))
    ]
    return Split(out, train_classes), excluded
