"""The paper's cross-dataset protocol on generated look-alikes of UCF50 / UCF101 / HMDB51 and
on the real clips."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, compose_cfg, require_real_clips

from media_retrieval.cli.train import train
from media_retrieval.data.corpus import encode_mp4
from media_retrieval.data.discovery import content_hash, scan_folder
from media_retrieval.data.presets import clip_identity
from media_retrieval.data.splits import Split, cross_dataset_split

CLASS_MAP = {
    "ucf101": {"Biking": "Biking", "Diving": "Diving", "Rare": "Rare", "ApplyEyeMakeup": None},
    "hmdb51": {"ride_bike": "Biking", "laugh": None},
}


def _clip(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    encode_mp4((rng.integers(0, 255, (24, 32, 3), dtype=np.uint8) for _ in range(6)), path, 6)


@pytest.fixture(scope="module")
def lookalikes(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cross")
    roots = {name: base / name for name in ("ucf50", "ucf101", "hmdb51")}
    seed = 0
    for cls, n in (("Biking", 6), ("Diving", 6), ("Rare", 2)):
        for c in range(1, n + 1):
            seed += 1
            _clip(roots["ucf50"] / cls / f"v_{cls}_g01_c{c:02d}.mp4", seed)
    # UCF101 contains the UCF50 clips: the same clip under its usual name...
    (roots["ucf101"] / "Biking").mkdir(parents=True)
    shutil.copy(
        roots["ucf50"] / "Biking" / "v_Biking_g01_c01.mp4",
        roots["ucf101"] / "Biking" / "v_Biking_g01_c01.mp4",
    )
    # ...and under another name (caught by content hash only)
    (roots["ucf101"] / "Diving").mkdir(parents=True)
    shutil.copy(
        roots["ucf50"] / "Diving" / "v_Diving_g01_c02.mp4",
        roots["ucf101"] / "Diving" / "renamed_copy.mp4",
    )
    for cls, n in (("Biking", 3), ("Diving", 3), ("Rare", 3), ("ApplyEyeMakeup", 4)):
        for c in range(1, n + 1):
            seed += 1
            _clip(roots["ucf101"] / cls / f"v_{cls}_g05_c{c:02d}.mp4", seed)
    for cls in ("ride_bike", "laugh"):
        for c in range(3):
            seed += 1
            _clip(roots["hmdb51"] / cls / f"{cls}_{c}.mp4", seed)
    return roots


def _split(roots, seed=0, min_clips=3):
    items = {name: scan_folder(root, name)[0] for name, root in roots.items()}
    targets = items["ucf101"] + items["hmdb51"]
    hashes = {it.path: content_hash(it.path) for its in items.values() for it in its}
    return cross_dataset_split(
        items["ucf50"], targets, CLASS_MAP, min_clips=min_clips, seed=seed, content_hash=hashes
    )


def test_no_training_clip_reaches_the_test_pool(lookalikes):
    split, excluded = _split(lookalikes)
    assert split.train_classes == ["Biking", "Diving"]  # Rare has 2 < min_clips clips
    trainval = [it for it in split.items if it.role in ("train", "val")]
    pool = [it for it in split.items if it.role in ("query", "gallery")]
    train_ids = {clip_identity(it.path) for it in trainval}
    train_hashes = {content_hash(it.path) for it in trainval}
    assert not train_ids & {clip_identity(it.path) for it in pool}
    assert not train_hashes & {content_hash(it.path) for it in pool}
    reasons = {Path(p).name: r for p, r in excluded}
    assert set(reasons) == {"v_Biking_g01_c01.mp4", "renamed_copy.mp4"}
    assert all("same clip as training" in r for r in reasons.values())


def test_seen_follows_the_class_map(lookalikes):
    split, _ = _split(lookalikes)
    pool = [it for it in split.items if it.role in ("query", "gallery")]
    by_original = {(it.dataset, it.original_label): (it.label, it.seen) for it in pool}
    assert by_original[("ucf101", "Biking")] == ("Biking", True)
    assert by_original[("hmdb51", "ride_bike")] == ("Biking", True)  # renamed to the source class
    assert by_original[("ucf101", "Rare")] == ("Rare", False)  # mapped, but Rare was not trained
    assert by_original[("ucf101", "ApplyEyeMakeup")] == ("ucf101/ApplyEyeMakeup", False)
    assert by_original[("hmdb51", "laugh")] == ("hmdb51/laugh", False)


def test_queries_stratified_and_split_deterministic(lookalikes):
    a, _ = _split(lookalikes, seed=7)
    b, _ = _split(lookalikes, seed=7)
    assert [(it.path, it.role) for it in a.items] == [(it.path, it.role) for it in b.items]
    pool_classes = {it.label for it in a.items if it.role in ("query", "gallery")}
    for c in pool_classes:  # every test class (all have 2+ clips) has a query and a gallery
        roles = {it.role for it in a.items if it.label == c and it.role in ("query", "gallery")}
        assert roles == {"query", "gallery"}, c
    assert sum(it.role == "val" for it in a.items) == 2  # 10 % of each trained class, at least one


def test_cross_protocol_trains_end_to_end(lookalikes, tmp_path):
    cfg = compose_cfg(
        "train.yaml",
        [
            "data=cross",
            f"data.source.root={lookalikes['ucf50']}",
            f"data.targets.ucf101={lookalikes['ucf101']}",
            f"data.targets.hmdb51={lookalikes['hmdb51']}",
            "data.min_clips=3",
            "data.clip.frames=4",
            "data.clip.image_size=32",
            "data.num_workers=0",
            f"paths.cache_dir={tmp_path}/cache",
            "trainer.max_epochs=2",
            "trainer.accelerator=cpu",
            "+data.class_map.ucf101.Rare=Rare",
        ],
        tmp_path / "run",
    )
    train(cfg)
    split_csv = (tmp_path / "run" / "split.csv").read_text()
    assert "hmdb51/laugh" in split_csv and "original_label" in split_csv
    skipped = (tmp_path / "run" / "skipped.csv").read_text()
    assert "renamed_copy.mp4" in skipped and "same clip as training" in skipped
    assert (tmp_path / "run" / "retrieval" / "results.json").is_file()


SAME_ACTION = {"fight": ["fightcam/fight", "rink/fight"]}


@pytest.fixture(scope="module")
def real_style(tmp_path_factory) -> dict[str, Path]:
    """Two training sets and two test sets, as experiment=paper_real's sides: one action (fight)
    in a training and a test set, one name (no_fight) in both that is not an action."""
    base = tmp_path_factory.mktemp("real_style")
    layout = {
        "fightcam": {"fight": 5, "no_fight": 5},
        "gym": {"lift": 5, "run": 5},
        "rink": {"fight": 3, "no_fight": 3},
        "street": {"push": 3},
    }
    seed = 1000
    for name, classes in layout.items():
        for cls, n in classes.items():
            for c in range(n):
                seed += 1
                _clip(base / name / cls / f"{cls}_{c}.mp4", seed)
    return {name: base / name for name in layout}


def _protocol_checks(split) -> None:
    """What both kinds of cross split must hold."""
    trainval = {it.path for it in split.items if it.role in ("train", "val")}
    pool = [it for it in split.items if it.role in ("query", "gallery")]
    assert trainval and pool and not trainval & {it.path for it in pool}  # no test clip trained
    trained = set(split.train_classes)
    for it in pool:  # seen exactly when the class was trained on, whatever its set calls it
        assert it.seen == (it.label in trained), (it.dataset, it.original_label, it.label)


def test_real_and_ucf_style_cross_splits_go_through_one_path(lookalikes, real_style, tmp_path):
    from media_retrieval.data.clips import ClipSpec
    from media_retrieval.data.datasets import CrossDataModule

    clip = ClipSpec(frames=4, image_size=32, chunk_s=None)
    real = CrossDataModule(
        source=None,
        sources={k: str(real_style[k]) for k in ("fightcam", "gym")},
        targets={k: str(real_style[k]) for k in ("rink", "street")},
        class_map={
            "same_action": SAME_ACTION,
            "kinetics400": {"gym": {"lift": "x"}, "street": {"push": "pushing person"}},
        },
        min_clips=2,
        held_out_fraction=0.2,
        dedupe_by_content=False,
        clip=clip,
        num_workers=0,
    )
    real.setup()
    split = real.split
    _protocol_checks(split)
    assert split.train_classes == ["fight", "fightcam/no_fight", "gym/lift", "gym/run"]
    pool = [it for it in split.items if it.role in ("query", "gallery")]
    held = [it for it in pool if it.held_out]
    assert {it.dataset for it in held} == {"fightcam", "gym"}  # from the training sets ...
    assert {it.label for it in held} == set(split.train_classes)  # ... one per trained class
    assert all(it.seen for it in held)
    cross = {(it.dataset, it.original_label): (it.label, it.seen) for it in pool if not it.held_out}
    assert cross[("rink", "fight")] == ("fight", True)  # the same action, trained in fightcam
    assert cross[("rink", "no_fight")] == ("rink/no_fight", False)  # same name, not an action
    assert cross[("street", "push")] == ("street/push", False)
    # the class map's Kinetics section flags test clips (unseen rows are split by it)
    assert {(it.dataset, it.original_label) for it in pool if it.kinetics and not it.seen} == {
        ("street", "push")
    }
    split.write_csv(tmp_path / "split.csv")  # data.split_file reads it back: flags stay flags
    again = Split.read_csv(tmp_path / "split.csv")
    flags = [(it.path, it.role, it.seen, it.held_out, it.kinetics) for it in split.items]
    assert [(it.path, it.role, it.seen, it.held_out, it.kinetics) for it in again.items] == flags
    older = tmp_path / "older.csv"  # a split file written before held-out clips existed
    lines = (tmp_path / "split.csv").read_text().splitlines()
    older.write_text("\n".join(line.rsplit(",", 2)[0] for line in lines) + "\n")
    assert not any(it.held_out or it.kinetics for it in Split.read_csv(older).items)

    ucf = CrossDataModule(
        source={"name": "ucf50", "root": str(lookalikes["ucf50"])},
        targets={k: str(lookalikes[k]) for k in ("ucf101", "hmdb51")},
        class_map=CLASS_MAP,
        min_clips=3,
        clip=clip,
        num_workers=0,
    )
    ucf.setup()
    _protocol_checks(ucf.split)
    assert ucf.split.train_classes == ["Biking", "Diving"]
    assert not any(it.held_out for it in ucf.split.items)  # the paper's split: none held out


def test_same_action_lists_are_checked():
    from media_retrieval.data.splits import same_action_index
    from media_retrieval.errors import DataError

    assert same_action_index(SAME_ACTION) == {
        ("fightcam", "fight"): "fight",
        ("rink", "fight"): "fight",
    }
    for bad in (
        {"fight": ["fightcam/fight"]},
        {"a": ["x/y", "z/w"], "b": ["x/y", "q/r"]},
        {"a": ["xy", "z/w"]},
    ):
        with pytest.raises(DataError, match="same_action"):
            same_action_index(bad)


def test_paper_real_sides_mirror_each_other_and_share_one_equivalence(tmp_path):
    import yaml

    from media_retrieval.config.paths import real_clips_dir

    side = {}
    for name in ("paper_real", "paper_real_mirror"):
        cfg = compose_cfg("train.yaml", [f"experiment={name}"], tmp_path)
        side[name] = (set(cfg.data.sources), set(cfg.data.targets))
        assert cfg.data.held_out_fraction > 0 and cfg.data.source is None
    (a_train, a_test), (b_train, b_test) = side["paper_real"], side["paper_real_mirror"]
    assert a_train == b_test and a_test == b_train and not a_train & a_test
    assert len(a_train | a_test) == 8  # every real set, on one side each
    class_map = yaml.safe_load(
        (ROOT / "configs" / "data" / "class_map" / "real_clips.yaml").read_text()
    )
    for members in class_map["same_action"].values():  # each equivalence spans the two sides
        sets = {m.split("/")[0] for m in members}
        assert sets & a_train and sets & a_test
    real = Path(real_clips_dir(str(ROOT)))
    if real.is_dir():  # every listed class exists in its set
        for members in class_map["same_action"].values():
            for m in members:
                assert (real / m).is_dir(), m


@pytest.mark.real_clips
def test_cross_split_on_real_clips():
    real = require_real_clips()
    source = scan_folder(real / "gestures-mini", "gestures-mini")[0]
    target = scan_folder(real / "ucf101-mini", "ucf101-mini")[0]
    split, excluded = cross_dataset_split(source, target, {}, min_clips=9, seed=0)
    assert not excluded and len(split.train_classes) == 3
    pool = [it for it in split.items if it.role in ("query", "gallery")]
    assert len(pool) == 15 and not any(it.seen for it in pool)  # no class map: all unseen
    assert {it.label for it in pool if it.role == "query"} == {
        f"ucf101-mini/{c}" for c in ("ApplyEyeMakeup", "BenchPress", "Diving")
    }


def _touch_clips(root: Path, names: dict[str, list[str]]) -> None:
    for cls, files in names.items():
        for f in files:
            _clip(root / cls / f, zlib.crc32(f.encode()))


def test_ucf101_official_split_files(tmp_path):
    from media_retrieval.data.presets import official_roles
    from media_retrieval.data.splits import official_split

    root = tmp_path / "UCF-101"
    _touch_clips(
        root, {c: [f"v_{c}_g0{g}_c01.avi" for g in (1, 2, 8, 9)] for c in ("Biking", "Diving")}
    )
    lists = tmp_path / "ucfTrainTestlist"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text(
        "".join(f"{c}/v_{c}_g0{g}_c01.avi 1\n" for c in ("Biking", "Diving") for g in (8, 9))
    )
    (lists / "testlist01.txt").write_text(
        "".join(f"{c}/v_{c}_g0{g}_c01.avi\n" for c in ("Biking", "Diving") for g in (1, 2))
    )
    items = scan_folder(root, "ucf101")[0]
    roles = official_roles("ucf101", root, items, split=1)
    assert {Path(p).stem: r for p, r in roles.items()}["v_Biking_g01_c01"] == "test"
    split = official_split(items, roles, unseen_classes=0.0)
    assert {
        it.role for it in split.items if "_g0" in it.path and ("g08" in it.path or "g09" in it.path)
    } <= {"train", "val"}
    assert all(it.seen for it in split.items)
    from media_retrieval.errors import DataError

    with pytest.raises(DataError, match="expected trainlist02.txt"):
        official_roles("ucf101", root, items, split=2)


def test_hmdb51_and_kth_official_splits(tmp_path):
    from media_retrieval.data.presets import official_roles

    hmdb = tmp_path / "hmdb51"
    _touch_clips(hmdb, {"laugh": ["a.avi", "b.avi", "c.avi"]})
    (hmdb / "laugh_test_split1.txt").write_text("a.avi 1\nb.avi 2\nc.avi 0\n")
    roles = {
        Path(p).name: r
        for p, r in official_roles("hmdb51", hmdb, scan_folder(hmdb, "hmdb51")[0]).items()
    }
    assert roles == {"a.avi": "train", "b.avi": "test"}  # 0 = not used in this split
    kth = tmp_path / "kth"
    _touch_clips(
        kth, {"boxing": ["person11_boxing_d1_uncomp.avi", "person22_boxing_d1_uncomp.avi"]}
    )
    roles = {
        Path(p).name: r for p, r in official_roles("kth", kth, scan_folder(kth, "kth")[0]).items()
    }
    assert roles == {
        "person11_boxing_d1_uncomp.avi": "train",
        "person22_boxing_d1_uncomp.avi": "test",
    }
