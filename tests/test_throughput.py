"""The fast embedding paths keep the results: bf16 autocast + channels_last against fp32,
decode workers against none, and an index's precision in its fingerprint."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.media_library import CLASSES, make_library
from torch.utils.data import DataLoader

from media_retrieval.data.clips import ClipSpec
from media_retrieval.data.library import SegmentDataset, skip_failed_collate
from media_retrieval.models.inference import fast_inference, resolve_precision


@pytest.fixture(scope="module")
def library(tmp_path_factory):
    media = tmp_path_factory.mktemp("fast") / "media"
    made = make_library(media, long_s=3.0)
    return media, [p for c in CLASSES for p in made[c]]


def test_bf16_channels_last_keeps_top5_neighbours(library):
    """The bf16 path (CPU autocast here; on CUDA the same code) finds >= 90 % of the fp32
    path's top-5 neighbours, on real ImageNet features of a mixed set of clips and images."""
    from media_retrieval.models import CNNLSTM

    _, files = library
    spec = ClipSpec(frames=4, image_size=96)
    clips = torch.stack(
        [
            b["clip"]
            for b in map(
                SegmentDataset([(str(f), None, None) for f in files], spec).__getitem__,
                range(len(files)),
            )
        ]
    )
    model = CNNLSTM({"name": "efficientnet_lite0", "weights": "imagenet"}, {"cell": "none"})
    fp32 = fast_inference(model, precision="fp32")({"clip": clips})
    bf16 = fast_inference(model, precision="bf16")({"clip": clips})
    assert bf16.dtype == torch.float32 and not torch.equal(fp32, bf16)  # it did run in bf16

    def top5(z: torch.Tensor) -> list[set[int]]:
        d = torch.cdist(z, z)
        d.fill_diagonal_(float("inf"))
        return [set(row.topk(5, largest=False).indices.tolist()) for row in d]

    overlap = np.mean([len(a & b) / 5 for a, b in zip(top5(fp32), top5(bf16), strict=True)])
    assert overlap >= 0.9
    assert (
        resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", "cuda") == "bf16"
    )


def test_fp32_on_cuda_means_ieee_fp32():
    """An fp32 index on a GPU is embedded with cuDNN's TF32 off (flags only: no GPU needed to
    check them), and the setting is the caller's again afterwards; bf16 is autocast."""
    from media_retrieval.models.inference import autocast

    cudnn = torch.backends.cudnn
    before = cudnn.allow_tf32
    cudnn.allow_tf32 = True
    try:
        with autocast("cuda", "fp32"):
            assert cudnn.allow_tf32 is False
        assert cudnn.allow_tf32 is True
        with autocast("cpu", "fp32"):
            assert cudnn.allow_tf32 is True and not torch.is_autocast_enabled("cpu")
        with autocast("cpu", "bf16"):
            assert (
                torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16
            )
    finally:
        cudnn.allow_tf32 = before


def test_channels_last_backbone_matches_default_layout():
    from media_retrieval.models.backbones import create_backbone

    bb = create_backbone("efficientnet_lite0", "imagenet").eval()
    x = torch.rand(4, 3, 96, 96)
    with torch.no_grad():
        fast = bb(x)
        plain = bb.net.to(memory_format=torch.contiguous_format)(x.contiguous())
    assert torch.allclose(fast, plain, atol=1e-4)


def test_decode_workers_give_identical_clips(library):
    _, files = library
    ds = SegmentDataset(
        [(str(f), None, None) for f in files[:8]], ClipSpec(frames=4, image_size=64)
    )

    def clips(workers: int) -> torch.Tensor:
        batches = DataLoader(ds, batch_size=3, num_workers=workers, collate_fn=skip_failed_collate)
        return torch.cat([b["clip"] for b in batches])

    assert torch.equal(clips(0), clips(2))


def test_index_precision_is_part_of_the_fingerprint(library, tmp_path):
    """bf16 and fp32 builds of one library are different indexes (their embeddings differ);
    a bf16 index embeds its queries in bf16 too, so a file finds itself first."""
    from media_retrieval.retrieval.indexer import IndexOptions
    from media_retrieval.retrieval.media_index import MediaIndex, default_model

    media, files = library
    spec = ClipSpec(frames=4, image_size=64, chunk_s=None)
    opts = {
        "num_workers": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False},
    }
    model = default_model()
    with (
        MediaIndex.build(
            media, tmp_path / "fp32", model, clip_spec=spec, options=IndexOptions(**opts)
        ) as a,
        MediaIndex.build(
            media,
            tmp_path / "bf16",
            model,
            clip_spec=spec,
            options=IndexOptions(precision="bf16", **opts),
        ) as b,
    ):
        assert a.manifest["precision"] == "fp32" and b.manifest["precision"] == "bf16"
        assert a.manifest["fingerprint"] != b.manifest["fingerprint"]
        assert b.built_by(model) and a.built_by(model)
        query = files[4]
        assert b.search(query, k=1)[0].rel_path == query.relative_to(media).as_posix()
        assert np.abs(a.vectors - b.vectors).max() > 1e-4  # bf16 really changed them
