"""Self-supervised training: views cut from dense frame features, InfoNCE, the label-free
validation metric, and ``data.labels=none`` end to end on the tiny corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import open_dict

from media_retrieval.data.clips import ClipSpec
from media_retrieval.data.datamodule import VideoRetrievalDataModule
from media_retrieval.data.views import MIN_SPAN, eval_view_pair, even_view, random_view
from media_retrieval.errors import ConfigError
from media_retrieval.models.losses import ViewContrastiveLoss
from media_retrieval.models.module import view_retrieval_accuracy


def test_views_come_from_one_video_and_differ():
    """Both training views are frame subsets of the same clip's dense features (rows of it, in
    time order, spanning at least half of it) and are not the same subset."""
    dm = VideoRetrievalDataModule(clip=ClipSpec(frames=4), dense_frames=12)
    feats = torch.arange(12, dtype=torch.float32).unsqueeze(1).repeat(1, 3)  # row t holds t
    torch.manual_seed(0)
    differ = 0
    for _ in range(50):
        out = dm._views(feats, train=True)
        views = out["views"]
        assert views.shape == (2, 4, 3) and torch.equal(out["features"], views[0])
        for v in views:
            t = v[:, 0]
            assert torch.equal(v, feats[t.long()])  # rows of this clip's features
            assert bool((t[1:] >= t[:-1]).all()) and t[-1] - t[0] >= MIN_SPAN * 11 - 1
        differ += not torch.equal(views[0], views[1])
    assert differ >= 45
    ev = dm._views(feats, train=False)  # fixed: the whole clip evenly + the validation pair
    assert ev["features"][:, 0].tolist() == [0, 4, 7, 11]
    a, b = eval_view_pair(12, 4)
    assert torch.equal(ev["views"][0], feats[a]) and torch.equal(ev["views"][1], feats[b])
    assert a.tolist() == [0, 2, 5, 7] and b.tolist() == [4, 6, 9, 11]
    assert even_view(12, 4).tolist() == [0, 4, 7, 11]
    idx = random_view(32, 16, np.random.default_rng(1))
    assert len(idx) == 16 and idx.min() >= 0 and idx.max() <= 31


def test_dense_frames_below_frames_refused():
    from media_retrieval.errors import DataError

    with pytest.raises(DataError, match="dense_frames"):
        VideoRetrievalDataModule(clip=ClipSpec(frames=16), dense_frames=8)


def test_view_retrieval_accuracy_hand_case():
    a = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    b = torch.tensor([[0.5, 0.0], [0.0, 9.0], [10.0, 1.0]])  # 0 found; 1 and 2 swapped
    assert view_retrieval_accuracy(a, b) == pytest.approx(1 / 3)
    assert view_retrieval_accuracy(a, a + 0.1) == 1.0


def test_infonce_prefers_matching_views():
    torch.manual_seed(0)
    loss = ViewContrastiveLoss(temperature=0.1)
    z = torch.randn(8, 16)
    assert loss(z, z + 0.01 * torch.randn(8, 16)) < loss(z, torch.randn(8, 16))


def test_infonce_needs_dense_frames(cfg_train):
    from media_retrieval.config_checks import validate_config

    with open_dict(cfg_train):
        cfg_train.model.loss.name = "infonce"
    with pytest.raises(ConfigError, match="data.dense_frames"):
        validate_config(cfg_train)
    with open_dict(cfg_train):
        cfg_train.model.loss.name = "ce"
        cfg_train.data.labels = "none"
        cfg_train.data.dense_frames = 8
    with pytest.raises(ConfigError, match="data.labels=none"):
        validate_config(cfg_train)


@pytest.mark.slow
def test_unlabelled_training_selects_checkpoints_by_view_accuracy(cfg_train):
    """``data.labels=none`` + ``model.loss.name=infonce``: no classes, every video trains or
    validates, InfoNCE is logged and checkpoints are chosen by ``val/view_acc``."""
    from media_retrieval.cli.train import train

    with open_dict(cfg_train):
        cfg_train.data.labels = "none"
        cfg_train.data.dense_frames = 8
        cfg_train.data.val_fraction = 0.2
        cfg_train.model.loss.name = "infonce"
        cfg_train.callbacks.retrieval = None
        cfg_train.callbacks.model_checkpoint.monitor = "val/view_acc"
        cfg_train.test = False
        cfg_train.trainer.max_epochs = 2
    metrics = train(cfg_train)
    assert 0.0 <= metrics["val/view_acc"] <= 1.0
    out = Path(cfg_train.paths.output_dir)
    split = (out / "split.csv").read_text()
    assert ",unlabelled," in split and ",query," not in split and ",val," in split
    ckpts = list((out / "checkpoints").glob("epoch_*.ckpt"))
    assert len(ckpts) == 1
    ckpt = torch.load(ckpts[0], map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["loss"]["name"] == "infonce"
    assert "val/view_acc" in str(ckpt["callbacks"])
    assert "train/infonce" in logged_columns(out) and "train/acc" not in logged_columns(out)


def logged_columns(run_dir: Path) -> set[str]:
    import csv

    (path,) = run_dir.rglob("metrics.csv")
    with open(path) as fh:
        return set(next(csv.reader(fh)))


@pytest.mark.slow
def test_infonce_joins_a_supervised_loss(cfg_train):
    """Labels plus ``infonce_weight``: both objectives train, the test still scores retrieval."""
    from media_retrieval.cli.train import train

    with open_dict(cfg_train):
        cfg_train.data.dense_frames = 8
        cfg_train.model.loss.infonce_weight = 0.5
        cfg_train.trainer.max_epochs = 1
    metrics = train(cfg_train)
    assert "retrieval/euclidean/unseen/accuracy@5" in metrics
    assert {"train/infonce", "train/acc"} <= logged_columns(Path(cfg_train.paths.output_dir))
