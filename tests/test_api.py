"""The Python API (issue 13): MediaIndex and load_model without Hydra; the clip spec that
travels with a checkpoint into the index; reload while other threads search."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, compose_cfg
from helpers.media_library import CLASSES, make_library, write_image, write_video
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from media_retrieval import ClipSpec, IndexOptions, MediaIndex, load_model
from media_retrieval.errors import ConfigError, DataError
from media_retrieval.models.record import RECORD_FORMAT, read_record, weights_sha256

SPEC = ClipSpec(frames=2, image_size=48, chunk_s=2.0)
OPTIONS = IndexOptions(batch_size=8, num_workers=0, trainer={"accelerator": "cpu"})


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    media = tmp_path_factory.mktemp("api") / "media"
    make_library(media, long_s=3.0)
    return media


def run_in_a_fresh_interpreter(code: str) -> None:
    """``code`` in a new Python with only the package on its path: what it imports is its own."""
    r = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr[-2000:]


def test_the_api_imports_without_hydra():
    code = (
        "import sys; import media_retrieval; from media_retrieval import MediaIndex, load_model, "
        "ClipSpec; "
        "MediaIndex, load_model, ClipSpec; assert 'hydra' not in sys.modules, 'hydra imported'"
    )
    run_in_a_fresh_interpreter(code)


def test_build_open_search_update(library, tmp_path):
    index = MediaIndex.build(library, tmp_path / "index", clip_spec=SPEC, options=OPTIONS)
    assert index.clip_spec.key() == SPEC.key() and index.generation == "gen-000001"
    q = write_image(tmp_path / "q.png", "blue_stripes", seed=7)
    hits = index.search(q, k=3)
    assert [Path(h.rel_path).parts[0] for h in hits] == ["blue_stripes"] * 3
    assert all(h.kept == (h.cosine > 0.8) for h in hits) and [h.rank for h in hits] == [1, 2, 3]
    assert hits[0].key == hits[0].segment.key and "kept_by_par" in hits[0].as_dict()
    # a query embedding works too, and is the same search
    same = index.search(index.embed([q])[0], k=3)
    assert [h.key for h in same] == [h.key for h in hits]
    # opened again, without building
    again = MediaIndex.open(tmp_path / "index")
    assert [h.key for h in again.search(q, k=3)] == [h.key for h in hits]
    # update: a new file is embedded and found after the automatic reload
    media = tmp_path / "media"
    import shutil

    shutil.copytree(library, media)
    moved = MediaIndex.build(media, tmp_path / "index2", clip_spec=SPEC, options=OPTIONS)
    added = write_video(media / "green_checker" / "new.mp4", "green_checker", 1.0, seed=99)
    stats = moved.update(OPTIONS)
    assert stats["embedded"] == 1 and moved.generation == "gen-000002"
    assert moved.search(added, k=1)[0].rel_path == "green_checker/new.mp4"
    with pytest.raises(ConfigError, match="group_by"):
        moved.search(q, group_by="folder")


def test_reload_while_other_threads_search(library, tmp_path):
    import shutil

    media = tmp_path / "media"
    shutil.copytree(library, media)
    index = MediaIndex.build(media, tmp_path / "index", clip_spec=SPEC, options=OPTIONS)
    reader = MediaIndex.open(tmp_path / "index")  # a second reader that keeps gen-000001 open
    q = index.embed([media / "red_disc" / "red_disc_photo0.jpg"])[0]
    errors, counts, stop = [], [0, 0], threading.Event()

    def searching(slot: int) -> None:
        while not stop.is_set():
            try:
                hits = index.search(q, k=3)
                assert Path(hits[0].rel_path).parts[0] == "red_disc"
                counts[slot] += 1
            except Exception as exc:  # noqa: BLE001 - any failure fails the test below
                errors.append(exc)
                return

    threads = [threading.Thread(target=searching, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    write_image(media / "red_disc" / "extra.png", "red_disc", seed=42)
    MediaIndex.build(media, tmp_path / "index", clip_spec=SPEC, options=OPTIONS)  # another writer
    assert index.reload() and index.generation == "gen-000002"
    assert not index.reload()  # nothing newer
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors and min(counts) > 0
    # gen-000001 is still held by `reader`: the build left it; once closed, the next build removes
    # it
    assert (tmp_path / "index" / "gen-000001").is_dir()
    assert len(reader.search(q, k=3)) == 3
    reader.close()
    index.update(
        OPTIONS
    )  # `index` itself held gen-000002 during this build: kept until a later one
    assert sorted(p.name for p in (tmp_path / "index").glob("gen-*")) == [
        "gen-000002",
        "gen-000003",
    ]
    assert index.generation == "gen-000003"


@pytest.mark.slow
def test_clip_spec_travels_with_the_checkpoint(cfg_train, tmp_path):
    """A model trained on non-default preprocessing (4 frames, 64 px, stretched) indexes and
    searches with nothing but its checkpoint: the index's vectors are the training pipeline's."""
    from media_retrieval.cli.index import run_index
    from media_retrieval.cli.train import train
    from media_retrieval.training import prepare

    with open_dict(cfg_train):
        cfg_train.data.clip.resize = "stretch"
        cfg_train.trainer.max_epochs = 1
    train(cfg_train)
    ckpt = Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    model = load_model(ckpt)
    assert model.clip_spec.key() == {
        "frames": 4,
        "image_size": 64,
        "resize": "stretch",
        "in_chans": 3,
        "sampling": "index",
        "chunk_s": None,
    }
    # a few clips of the training corpus as a library
    datamodule, _ = prepare(cfg_train, model=load_model(ckpt))
    items = datamodule.split.items[:6]
    media = tmp_path / "media"
    for it in items:
        (media / it.label).mkdir(parents=True, exist_ok=True)
        (media / it.label / Path(it.path).name).symlink_to(it.path)
    cfg = compose_cfg(
        "index.yaml",
        [
            f"ckpt_path={ckpt}",
            f"media_dir={media}",
            f"index_dir={tmp_path / 'index'}",
            "clip.chunk_s=null",
            "num_workers=0",
            "trainer.accelerator=cpu",
        ],
        tmp_path,
    )
    GlobalHydra.instance().clear()
    run_index(cfg)
    index = MediaIndex.open(tmp_path / "index")
    assert index.clip_spec.key() == model.clip_spec.key()
    dm = datamodule
    dm.cache = None  # pixels through the training pipeline (not the feature cache)
    for it in items:
        want = model.embed({"clip": dm.load_pixels(it).unsqueeze(0)})[0].detach().numpy()
        row = next(
            i for i, s in enumerate(index.segments) if Path(s.path).name == Path(it.path).name
        )
        np.testing.assert_allclose(index.vectors[row], want, atol=1e-4)
        hit = index.search(it.path, k=1)[0]
        assert Path(hit.rel_path).name == Path(it.path).name and hit.distance < 1e-3


@pytest.mark.slow
def test_checkpoints_record_their_class_and_older_ones_still_load(cfg_train, tmp_path):
    from media_retrieval.cli.train import train
    from media_retrieval.models import CNNLSTM

    with open_dict(cfg_train):
        cfg_train.trainer.max_epochs = 1
    train(cfg_train)
    ckpt = Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert data["media_retrieval"]["class"] == "media_retrieval.models.cnn_lstm.CNNLSTM"
    model = load_model(ckpt)
    del data["media_retrieval"]
    old = tmp_path / "old.ckpt"
    torch.save(data, old)
    with pytest.raises(ConfigError, match="predates recorded model classes"):
        load_model(old)
    legacy = load_model(old, cls=CNNLSTM)
    assert legacy.clip_spec is None and legacy.input_spec.frames == 16  # falls back to the defaults
    for a, b in zip(model.state_dict().values(), legacy.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    # trained with model.compile=true: compiling is the loader's choice, not the checkpoint's
    compiled = tmp_path / "compiled.ckpt"
    data = torch.load(ckpt, map_location="cpu", weights_only=True)
    data["hyper_parameters"]["compile"] = True
    torch.save(data, compiled)
    assert not hasattr(load_model(compiled).embed, "_torchdynamo_orig_callable")
    assert hasattr(load_model(compiled, compile=True).embed, "_torchdynamo_orig_callable")


def test_embed_file_uses_the_models_clip_spec(tmp_path):
    from media_retrieval.retrieval.media_index import default_model

    model = default_model()
    model.clip_spec = ClipSpec(frames=2, image_size=32)
    img = write_image(tmp_path / "a.png", CLASSES[0], seed=1)
    v = model.embed_file(str(img))
    from media_retrieval.clips import load_clip

    want = model.embed({"clip": load_clip(img, model.clip_spec).unsqueeze(0)})[0]
    assert v.shape == (1280,) and torch.allclose(v, want)


def test_a_grayscale_model_without_a_checkpoint_indexes_through_the_api(library, tmp_path):
    """MediaIndex.build without a clip spec takes the model's own (its channels too): a model
    built for grayscale input gets grayscale clips, as through the command line."""
    from media_retrieval.models import CNNLSTM

    gray = CNNLSTM(
        backbone={"name": "efficientnet_lite0", "weights": "none", "in_chans": 1},
        temporal={"cell": "none"},
        name="gray",
        input_size=48,
    ).eval()
    index = MediaIndex.build(library, tmp_path / "index", gray, options=OPTIONS)
    assert index.clip_spec.in_chans == 1 and len(index.segments) > 0


def test_the_config_schemas_import_no_torch():
    """Schemas by concern, checked before the heavy imports: registering and checking them
    loads neither torch nor Lightning."""
    modules = ", ".join(
        f"media_retrieval.config.{m}"
        for m in ("clip", "data", "model", "index", "retrieval", "paths")
    )
    code = (
        f"import sys; import media_retrieval.config.store as s; s.register(); import {modules}; "
        "bad = {'torch', 'lightning'} & set(sys.modules); assert not bad, bad"
    )
    run_in_a_fresh_interpreter(code)


def test_the_command_line_layer_stays_thin():
    """cli/ parses, calls the library and prints; what it decides lives below it (issue 26: under
    400 lines, at the project's 100 columns)."""
    lines = sum(
        len(p.read_text().splitlines()) for p in (ROOT / "src/media_retrieval/cli").glob("*.py")
    )
    assert lines < 400, f"cli/ has {lines} lines: move what it decides into the library"


def test_layers_import_only_downward_and_without_cycles():
    """The package graph: library layers (data, models, retrieval, ...) never import the
    application layers (cli, callbacks, reporting), and no two packages import each other."""
    import ast
    from collections import defaultdict
    from pathlib import Path

    import media_retrieval

    root = Path(media_retrieval.__file__).parent
    edges: dict[str, set[str]] = defaultdict(set)
    for p in root.rglob("*.py"):
        here = p.relative_to(root).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(p.read_text())):
            if (
                isinstance(node, ast.ImportFrom)
                and node.module
                and node.module.startswith("media_retrieval.")
            ):
                there = node.module.split(".")[1]
                if there != here:
                    edges[here].add(there)
    app = {"cli", "callbacks", "reporting"}
    for lib in (
        "data",
        "models",
        "retrieval",
        "utils",
        "clips",
        "errors",
        "config",
        "training",
    ):
        assert not edges[lib] & app, f"{lib} imports {edges[lib] & app}"
    assert not edges["utils"] - {"errors"}
    cycles = sorted((a, b) for a in edges for b in edges[a] if a < b and a in edges.get(b, set()))
    assert not cycles, cycles


def test_delta_auto_is_chosen_on_validation_and_travels_to_the_index(
    cfg_train, cfg_eval, tmp_path, capsys
):
    """retrieval.par.delta=auto: δ is picked on the validation clips and saved in the checkpoint;
    then eval, index, search, the service and the report each use the δ a checkpoint records
    (here rewritten to 0.35, a value no default holds), with nothing set but ``auto``."""
    from fastapi.testclient import TestClient

    from media_retrieval.cli.eval import evaluate
    from media_retrieval.cli.index import run_index
    from media_retrieval.cli.search import search
    from media_retrieval.cli.train import train
    from media_retrieval.config.retrieval import DEFAULT_DELTA
    from media_retrieval.reporting.report import write_report
    from media_retrieval.serve.app import ServiceSettings, create_app

    with open_dict(cfg_train):
        cfg_train.retrieval.par.delta = "auto"
        cfg_train.retrieval.par.deltas = [round(-1 + 0.05 * i, 2) for i in range(40)]
        cfg_train.trainer.max_epochs = 1
    train(cfg_train)
    ckpt = Path(cfg_train.paths.output_dir) / "checkpoints" / "last.ckpt"
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    stored = saved["media_retrieval"]["par_delta"]
    assert stored in list(
        cfg_train.retrieval.par.deltas
    )  # δ = -1 keeps every candidate: never eligible...
    assert stored != -1.0  # ...since mean_kept must stay below k
    assert load_model(ckpt).par_delta == stored
    # one record, read through one function, for the checkpoint and (below) the index
    record = read_record(saved["media_retrieval"], saved["hyper_parameters"])
    model = load_model(ckpt)
    assert (
        record.format == RECORD_FORMAT and record.cls == "media_retrieval.models.cnn_lstm.CNNLSTM"
    )
    assert (
        record.clip_spec == model.clip_spec
        and record.delta == stored
        and record.hparams["name"] == model.hparams.name
    )
    assert record.encoder_sha256 == {"backbone": weights_sha256(model.backbone)}
    results = json.loads(
        (Path(cfg_train.paths.output_dir) / "retrieval" / "results.json").read_text()
    )
    assert any(r["ranking"] == "par" and r["delta"] == stored for r in results)
    recorded = 0.35
    assert recorded != DEFAULT_DELTA
    saved["media_retrieval"]["par_delta"] = recorded
    ckpt = tmp_path / "recorded.ckpt"
    torch.save(saved, ckpt)

    # eval: the test's PAR rows, its delta.json and its table title
    eval_dir = tmp_path / "eval"
    with open_dict(cfg_eval):
        cfg_eval.ckpt_path = str(ckpt)
        cfg_eval.paths.output_dir = str(eval_dir)
        assert cfg_eval.retrieval.par.delta == "auto"
    evaluate(cfg_eval)
    assert f"PAR δ = {recorded:g} chosen on validation" in capsys.readouterr().out
    assert json.loads((eval_dir / "retrieval" / "delta.json").read_text()) == {
        "delta": recorded,
        "how": "validation",
    }
    # the report: each run's own δ unless a number is given
    report = write_report([eval_dir], tmp_path / "report" / "report.md", k=5).read_text()
    assert f"PAR δ = {recorded:g}." in report
    assert (
        "PAR δ = 0.5."
        in write_report([eval_dir], tmp_path / "report2" / "report.md", k=5, delta=0.5).read_text()
    )
    (eval_dir / "retrieval" / "delta.json").write_text(
        "{not json"
    )  # a damaged record: the default, no crash
    assert (
        f"PAR δ = {DEFAULT_DELTA:g}."
        in write_report([eval_dir], tmp_path / "report3" / "report.md").read_text()
    )
    (eval_dir / "retrieval" / "delta.json").write_text(
        json.dumps({"delta": recorded, "how": "validation"})
    )

    # index: the manifest; search (command line and Python): the index's δ
    media = tmp_path / "media"
    (media / "a").mkdir(parents=True)
    for p in sorted(Path(cfg_train.data.root).rglob("*.mp4"))[:3]:
        (media / "a" / p.name).symlink_to(p)
    cfg = compose_cfg(
        "index.yaml",
        [
            f"ckpt_path={ckpt}",
            f"media_dir={media}",
            f"index_dir={tmp_path / 'index'}",
            "num_workers=0",
            "trainer.accelerator=cpu",
        ],
        tmp_path,
    )
    GlobalHydra.instance().clear()
    run_index(cfg)
    index = MediaIndex.open(tmp_path / "index")
    assert index.par_delta == recorded and index.delta_choice().how == "validation"
    assert index.record.delta == recorded and index.record.encoder_sha256 == record.encoder_sha256
    assert index.record == read_record(
        json.loads((tmp_path / "index" / index.generation / "model.json").read_text())
    )
    query = next((media / "a").iterdir())
    assert index.search_one(query, k=2).delta == recorded
    capsys.readouterr()
    search(
        compose_cfg(
            "search.yaml", [f"index_dir={tmp_path / 'index'}", f"query={query}", "k=2"], tmp_path
        )
    )
    GlobalHydra.instance().clear()
    assert f"PAR δ = {recorded}" in capsys.readouterr().out

    # the service: /stats and a search that sets no δ
    with TestClient(
        create_app(ServiceSettings(index_dir=str(tmp_path / "index"))), base_url="http://127.0.0.1"
    ) as c:
        assert c.get("/stats").json()["par_delta"] == recorded  # what the page shows
        with open(query, "rb") as fh:
            reply = c.post("/search?k=2", files={"file": (query.name, fh, "video/mp4")})
        assert reply.status_code == 200, reply.text
        assert reply.json()["delta"] == recorded


def test_the_model_record_reads_older_records_and_refuses_what_is_not_one():
    """Format 1 (class, clip spec, δ) and format 0 (nothing recorded) still read; an index that
    kept δ in its manifest gives it through ``legacy_delta``; anything else is one line."""
    spec = {"frames": 4, "image_size": 64}
    old = read_record(
        {"format": 1, "class": "x.Y", "clip_spec": spec, "par_delta": 0.4}, {"name": "m"}
    )
    assert old.cls == "x.Y" and old.hparams == {"name": "m"} and old.clip_spec == ClipSpec(**spec)
    assert old.delta_choice().value == 0.4 and old.delta_choice().how == "validation"
    assert old.delta_choice(0.7).how == "given"
    none = read_record({})
    assert none.format == 0 and none.delta is None and none.delta_choice().how == "default"
    assert read_record({"class": "x.Y", "hparams": {}}, legacy_delta=0.25).delta == 0.25
    for bad, why in [
        ([], "not a mapping"),
        ({"format": 99}, "newer version"),
        ({"class": 3}, "not a name"),
        ({"par_delta": "drop table"}, None),
        ({"encoder_sha256": {"a": 1}}, "encoder_sha256"),
        ({"whitening": {"dim": "x"}}, "whitening"),
        ({"clip_spec": {"frames": "4"}}, "clip spec"),
    ]:
        if why is None:  # a δ that is not a number in [-1, 1] reads as none chosen
            assert read_record(bad).delta is None
            continue
        with pytest.raises(DataError, match=why) as err:
            read_record(bad)
        assert "\n" not in str(err.value)


def test_pixel_model_index_queries_on_the_builds_layout(library, tmp_path):
    """A 3D-CNN index (C3D, small) answers queries on the layout its build used
    (channels_last_3d), and a file's query finds its own segment at distance ~0."""
    from media_retrieval.models.c3d import C3DModule

    torch.manual_seed(0)
    spec = ClipSpec(frames=4, image_size=32, chunk_s=2.0)
    index = MediaIndex.build(
        library,
        tmp_path / "index",
        model=C3DModule(width=0.125, input_size=32),
        clip_spec=spec,
        options=OPTIONS,
    )
    conv = next(m for m in index.model.modules() if isinstance(m, torch.nn.Conv3d))
    assert (
        conv.weight.is_contiguous(memory_format=torch.channels_last_3d) and not index.model.training
    )
    photo = next(library.glob("red_disc/*.jpg"))
    hits = index.search(photo, k=100)  # an untrained net: other stills may lie as close
    own = [h for h in hits if h.rel_path == photo.relative_to(library).as_posix()]
    assert own and own[0].distance < 1e-4 * max(1.0, float(np.linalg.norm(index.embed([photo])[0])))


def test_a_model_that_embeds_images_apart_from_videos_says_so_at_index_and_search(
    library, tmp_path, caplog
):
    """mean ⊕ std (what ``src/index.py`` indexes without a checkpoint): a still's std is zero, so an
    image finds images (benchmarks/cross_media.py). Building a mixed library and the first image
    query warn once each, naming the fix; the fix itself (the mean alone) warns at neither."""
    from media_retrieval.models import CNNLSTM
    from media_retrieval.models.i3d import I3DModule

    def lite0(stats: list[str]) -> CNNLSTM:
        return CNNLSTM(
            backbone={"name": "efficientnet_lite0", "weights": "none"},
            temporal={"cell": "none", "stats": stats},
            name="lite0",
            input_size=48,
        ).eval()

    q = write_image(tmp_path / "q.png", "blue_stripes", seed=7)
    with caplog.at_level("WARNING"):
        index = MediaIndex.build(
            library, tmp_path / "mean_std", lite0(["mean", "std"]), clip_spec=SPEC, options=OPTIONS
        )
        index.search(q, k=3)
        index.search(q, k=3)
        index.embed_each([q])
    said = [r.getMessage() for r in caplog.records if "embed apart" in r.getMessage()]
    assert len(said) == 2, said
    assert said[0].startswith(
        "this library mixes images and videos: this model's std is zero for a still"
    )
    assert said[1].startswith("image query against an index holding videos")
    assert all("model.temporal.stats=[mean]" in m for m in said)
    caplog.clear()
    with caplog.at_level("WARNING"):
        MediaIndex.build(
            library, tmp_path / "mean", lite0(["mean"]), clip_spec=SPEC, options=OPTIONS
        ).search(q, k=3)
    assert not [r for r in caplog.records if "embed apart" in r.getMessage()]
    assert "motionless" in I3DModule(weights="none").media_gap
