"""The clip node: one config node per use whose schema is ClipSpec, each field's default in one
file, validation by ClipSpec alone, and the DataModule built from it."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, compose_cfg, tiny_overrides

from media_retrieval.config.clip import ClipSpec, check_clip_node
from media_retrieval.errors import ConfigError

CONFIGS = ROOT / "configs"
FIELDS = {f.name for f in fields(ClipSpec)}


def _clip_nodes(node: object, under_clip: bool = False):
    """Every mapping of a parsed YAML that is a clip node (the value of a ``clip:`` key)."""
    if isinstance(node, dict):
        if under_clip:
            yield node
        for key, value in node.items():
            yield from _clip_nodes(value, key == "clip")


def _set_fields(node: dict) -> set[str]:
    return {k for k, v in node.items() if k in FIELDS and v is not None}


def test_each_clip_field_has_its_default_in_one_file():
    """The grep the issue asks for: across configs/, each ClipSpec field gets a value in one
    file of the clip group; the shared files (data/_base, train, eval, index, search, serve)
    restate none; only dataset presets and experiments change one, inside a ``clip:`` node."""
    group = {
        p.name: yaml.safe_load(p.read_text()) for p in sorted((CONFIGS / "clip").glob("*.yaml"))
    }
    assert set(group) == {"default.yaml", "model.yaml"}
    holders = {f: [name for name, node in group.items() if f in _set_fields(node)] for f in FIELDS}
    assert all(len(files) == 1 for files in holders.values()), holders
    assert set(group["default.yaml"]) - {"defaults"} == FIELDS  # every field, all set
    assert _set_fields(group["model.yaml"]) == {"chunk_s"}  # the rest: null, the model's own

    for path in sorted(CONFIGS.rglob("*.yaml")):
        rel = path.relative_to(CONFIGS).as_posix()
        if rel.startswith("clip/"):
            continue
        doc = yaml.safe_load(path.read_text()) or {}
        outside = {k for k in doc if k in FIELDS and doc[k] is not None}
        if rel.startswith("model/"):
            outside -= {"in_chans"}  # the architecture's input channels, which the node follows
        assert not outside, f"{rel} sets {outside} outside a clip node"
        inside = set().union(*(_set_fields(n) for n in _clip_nodes(doc)))
        shared = rel in {"data/_base.yaml", "train.yaml", "eval.yaml", "index.yaml",
                         "search.yaml", "serve.yaml"}  # fmt: skip
        assert not (shared and inside), f"{rel} restates {inside}"


def test_the_node_is_typed_by_clipspec_and_the_datamodule_is_built_from_it(tiny_dirs, tmp_path):
    from media_retrieval.utils.instantiate import build

    cfg = compose_cfg("train.yaml", [*tiny_overrides(*tiny_dirs), "data.clip.frames=5"], tmp_path)
    assert set(cfg.data.clip) == FIELDS  # a field added to ClipSpec is a config key at once
    dm = build(cfg.data)
    assert dm.clip_spec == ClipSpec.from_node(cfg.data.clip)
    assert (dm.clip_spec.frames, dm.clip_spec.image_size, dm.clip_spec.chunk_s) == (5, 64, None)
    index = compose_cfg("index.yaml", ["clip.frames=8"], tmp_path)
    assert set(index.clip) == FIELDS and index.clip.image_size is None and index.clip.chunk_s == 10
    trained = ClipSpec(frames=16, image_size=112, chunk_s=None)
    assert trained.with_node(index.clip, warn=False) == ClipSpec(
        frames=8, image_size=112, chunk_s=10
    )


@pytest.mark.parametrize(
    ("node", "message"),
    [
        ({"sampling": "random"}, "data.clip.sampling='random'; valid: index, time"),
        ({"frames": 0}, "data.clip.frames=0: needs frames in 1..1024"),
        ({"chunk_s": -1}, "data.clip.chunk_s=-1: needs chunk_s > 0 or null"),
        ({"frames": 1024, "image_size": 4096}, "over the limit"),
    ],
)
def test_clip_node_errors_are_clipspecs_own_checks_in_one_line(node, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")) as err:
        check_clip_node(node, "data.clip")
    assert "\n" not in str(err.value)
    check_clip_node({"frames": None, "chunk_s": 3}, "clip")  # null: the model's own


def test_moved_keys_say_where_they_went(tmp_path):
    from media_retrieval.config_checks import check_overrides

    with pytest.raises(ConfigError, match=r"^data\.frames is data\.clip\.frames now"):
        check_overrides(Path(CONFIGS), "train.yaml", ["data.frames=4"])
    with pytest.raises(ConfigError, match=r"^preprocess\.chunk_s is clip\.chunk_s now"):
        check_overrides(Path(CONFIGS), "index.yaml", ["preprocess.chunk_s=null"])
