"""Every model and temporal variant is a plain override that trains and evaluates retrieval."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import compose_cfg, tiny_overrides

from media_retrieval.cli.train import train


def _run(tiny_dirs, tmp_path, extra: list[str]) -> list[dict]:
    cfg = compose_cfg(
        "train.yaml", [*tiny_overrides(*tiny_dirs), "trainer.max_epochs=1", *extra], tmp_path
    )
    train(cfg)
    return json.loads((Path(tmp_path) / "retrieval" / "results.json").read_text())


@pytest.mark.parametrize(
    ("extra", "dim"),
    [
        (["model.temporal.cell=gru"], 256),
        (
            [
                "model.temporal.num_layers=3",
                "model.temporal.dropout=0.1",
                "model.temporal.hidden=32",
            ],
            32,
        ),
        (["model.temporal.bidirectional=true", "model.temporal.hidden=32"], 64),
        (["model.temporal.readout=mean", "model.temporal.hidden=32"], 32),
        (["model.temporal.readout=last_hc", "model.temporal.hidden=32"], 64),
        (
            [
                "model.temporal.cell=gru",
                "model.temporal.bidirectional=true",
                "model.temporal.num_layers=2",
                "model.temporal.hidden=16",
                "model.temporal.embed_dim=24",
            ],
            24,
        ),
    ],
)
def test_temporal_variant_trains_a_step(tiny_dirs, tmp_path, extra, dim):
    rows = _run(tiny_dirs, tmp_path, extra)
    assert rows and all(r["n_queries"] > 0 for r in rows)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    head = [v for k, v in ckpt["state_dict"].items() if k.startswith("classifier.1.weight")][0]
    assert head.shape[1] == dim  # the classifier sits on an embedding of the expected size


def test_c3d_trains_on_pixels_and_evaluates(tiny_dirs, tmp_path):
    rows = _run(
        tiny_dirs,
        tmp_path,
        ["model=c3d", "model.width=0.125", "data.clip.image_size=64", "data.batch_size=4"],
    )
    assert {r["model"] for r in rows} == {"c3d"}
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["state_dict"]["net.head.7.weight"].shape[0] == 256  # the 256-d embedding layer


@pytest.mark.parametrize("loss", ["triplet", "supcon", "proxy_anchor", "arcface"])
def test_metric_learning_loss_trains_a_step(tiny_dirs, tmp_path, loss):
    rows = _run(
        tiny_dirs,
        tmp_path,
        [
            f"model.loss.name={loss}",
            "data.m_per_class=2",
            "data.batch_size=6",
            "model.temporal.hidden=32",
        ],
    )
    assert rows and all(r["n_queries"] > 0 for r in rows)
    ckpt = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert not any(
        k.startswith("classifier") for k in ckpt["state_dict"]
    )  # the loss trains the embedding
    if loss in ("proxy_anchor", "arcface"):  # proxies are trained parameters, saved with the model
        assert any(k.startswith("metric_loss") for k in ckpt["state_dict"])


def test_class_balanced_batches(tiny_dirs, tmp_path):
    from conftest import compose_cfg as _compose
    from hydra.utils import instantiate

    from media_retrieval.data.datasets import BuiltinDataModule  # noqa: F401

    cfg = _compose(
        "train.yaml",
        [*tiny_overrides(*tiny_dirs), "data.m_per_class=2", "data.batch_size=6"],
        tmp_path,
    )
    dm = instantiate(cfg.data)
    dm.prepare_data()
    dm.setup("fit")
    for batch in dm.train_dataloader():
        counts = torch.bincount(batch["target"])
        assert set(counts[counts > 0].tolist()) == {2}


def test_end_to_end_fine_tunes_backbone_except_frozen_blocks(tiny_dirs, tmp_path):
    from media_retrieval.models.backbones import backbone_blocks
    from media_retrieval.models.cnn_lstm import CNNLSTM

    before = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "imagenet", "in_chans": 3}, {"hidden": 16}
    )
    rows = _run(
        tiny_dirs,
        tmp_path,
        [
            "model=cnn_lstm_e2e",
            "model.freeze_blocks=2",
            "model.temporal.hidden=16",
            "data.batch_size=4",
            "model.lr=0.01",
        ],
    )
    assert {r["model"] for r in rows} == {"cnn_lstm_e2e"}
    after = CNNLSTM.load_from_checkpoint(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    old, new = backbone_blocks(before.backbone.net), backbone_blocks(after.backbone.net)

    def same(a, b):
        return all(
            torch.equal(x, y)
            for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
        )

    assert same(old[0], new[0]) and same(old[1], new[1])  # frozen: weights and BN statistics
    assert not same(old[-1], new[-1])  # fine-tuned
    groups = after.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == pytest.approx([0.001, 0.01])  # backbone at lr x 0.1


@pytest.mark.parametrize("arch", ["r2plus1d", "x3d_xs"])
def test_pytorchvideo_3d_baselines_train_and_evaluate(tiny_dirs, tmp_path, arch):
    rows = _run(
        tiny_dirs, tmp_path, [f"model={arch}", "data.clip.image_size=64", "data.batch_size=8"]
    )
    assert {r["model"] for r in rows} == {arch}
    assert all(r["n_queries"] > 0 for r in rows)
