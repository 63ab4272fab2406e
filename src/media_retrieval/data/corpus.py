"""Deterministic built-in corpus: real H.264 MP4 files whose classes differ only by motion.

Why a generator and not a download: the project must run offline and in CI, and a corpus
whose generative factors are known lets tests check claims (appearance independent of class,
which classes a pooled-feature model *can* separate) that a scraped dataset cannot.

Layout on disk mirrors UCF/HMDB/KTH: ``<root>/<style>/<class>/<clip>.mp4`` for the two video
"datasets" (``style_a``, ``style_b``) and ``<root>/images/<class>/<n>.png`` for still images
whose classes are defined by appearance. ``manifest.json`` records every file with its SHA-256
and the generation settings; a corpus whose manifest matches the requested settings and whose
files verify is reused, anything else is regenerated.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image
from rich.progress import Progress

from media_retrieval.utils.files import atomic_path, atomic_write_text, sha256_file

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
CORPUS_VERSION = 2  # bump when rendering changes: old corpora are then regenerated

# Classes a per-frame-feature + recurrent model can separate in principle: the globally pooled
# CNN feature of a frame changes over time in a class-specific way (size, visibility,
# orientation, aspect ratio, entering/leaving the frame).
SEPARABLE_CLASSES = (
    "static",
    "zoom_in",
    "zoom_out",
    "pulse",
    "blink",
    "rotate",
    "squash",
    "pass_through",
)
# Classes that test the limits: they differ mainly by *where* or *which way* the shape moves,
# which global average pooling mostly discards (only padding and border effects remain).
LIMIT_CLASSES = ("move_left", "move_right", "move_up", "move_down")
MOTION_CLASSES = SEPARABLE_CLASSES + LIMIT_CLASSES
STYLES = ("style_a", "style_b")
IMAGE_CLASSES = ("red_disc", "green_square", "blue_triangle", "yellow_bar")

SHAPES = ("disc", "square", "triangle", "bar", "cross")
RESOLUTIONS = ((128, 96), (160, 120), (176, 144), (192, 144), (160, 160), (224, 128))
FRAME_RATES = (10, 12, 15, 20, 24)


@dataclass(frozen=True)
class CorpusSpec:
    """Everything that determines the bytes of the corpus; part of the manifest key."""

    clips_per_class: int = 20
    images_per_class: int = 12
    min_duration_s: float = 2.0
    max_duration_s: float = 20.0
    classes: tuple[str, ...] = MOTION_CLASSES
    styles: tuple[str, ...] = STYLES
    resolutions: tuple[tuple[int, int], ...] = RESOLUTIONS
    frame_rates: tuple[int, ...] = FRAME_RATES
    seed: int = 0
    version: int = CORPUS_VERSION

    def key(self) -> str:
        payload = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass
class ClipPlan:
    """One clip to render: where it goes and every random draw that shapes it."""

    path: str
    style: str
    label: str
    index: int
    seed: int
    width: int
    height: int
    fps: int
    n_frames: int
    appearance: dict = field(default_factory=dict)
    motion: dict = field(default_factory=dict)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def _draw_appearance(rng: np.random.Generator, style: str) -> dict:
    """Appearance is drawn from its own stream, never from the class: only motion is signal."""
    fg = rng.uniform(0.05, 1.0, size=3)
    bg = rng.uniform(0.0, 1.0, size=3)
    # Keep foreground visible against background whatever the draw.
    if np.abs(fg - bg).sum() < 0.6:
        fg = 1.0 - bg
    return {
        "shape": str(rng.choice(SHAPES)),
        "fg": [round(float(x), 4) for x in fg],
        "bg": [round(float(x), 4) for x in bg],
        "bg2": [round(float(x), 4) for x in rng.uniform(0.0, 1.0, size=3)],
        "size": round(float(rng.uniform(0.25, 0.45)), 4),  # fraction of the short side
        "noise": round(float(rng.uniform(0.0, 0.03 if style == "style_a" else 0.06)), 4),
        "texture_freq": round(float(rng.uniform(2.0, 6.0)), 4),
        "cx": round(float(rng.uniform(0.35, 0.65)), 4),
        "cy": round(float(rng.uniform(0.35, 0.65)), 4),
    }


def _draw_motion(rng: np.random.Generator) -> dict:
    return {
        "cycles": int(rng.integers(2, 4)),  # periodic classes: 2 or 3 periods per clip
        "phase": round(float(rng.uniform(0.0, 0.25)), 4),
        "amplitude": round(float(rng.uniform(0.8, 1.0)), 4),
    }


def plan_corpus(spec: CorpusSpec, root: Path) -> list[ClipPlan]:
    plans = []
    for style in spec.styles:
        for label in spec.classes:
            for i in range(spec.clips_per_class):
                rng = _rng(spec.seed, style, label, i)
                w, h = spec.resolutions[int(rng.integers(len(spec.resolutions)))]
                fps = int(spec.frame_rates[int(rng.integers(len(spec.frame_rates)))])
                # Log-uniform durations: many short clips, a few long ones (like real footage).
                lo, hi = math.log(spec.min_duration_s), math.log(spec.max_duration_s)
                duration = math.exp(rng.uniform(lo, hi))
                n_frames = max(int(round(duration * fps)), 2)
                appearance = _draw_appearance(_rng(spec.seed, style, label, i, "appearance"), style)
                motion = _draw_motion(_rng(spec.seed, style, label, i, "motion"))
                rel = f"{style}/{label}/{style}_{label}_{i:03d}.mp4"
                plans.append(
                    ClipPlan(
                        str(root / rel),
                        style,
                        label,
                        i,
                        spec.seed,
                        w,
                        h,
                        fps,
                        n_frames,
                        appearance,
                        motion,
                    )
                )
    return plans


# ----------------------------------------------------------------------------- rendering


def _shape_mask(
    shape: str, xx: np.ndarray, yy: np.ndarray, half: float, angle: float, sx: float, sy: float
) -> np.ndarray:
    """Boolean mask of a shape centred at 0 in coordinates (xx, yy), rotated and scaled."""
    c, s = math.cos(angle), math.sin(angle)
    u = (c * xx + s * yy) / max(sx, 1e-3)
    v = (-s * xx + c * yy) / max(sy, 1e-3)
    if shape == "disc":
        # An off-centre notch makes rotation visible on a disc too.
        return (u**2 + v**2 <= half**2) & ~((u - 0.5 * half) ** 2 + v**2 <= (0.3 * half) ** 2)
    if shape == "square":
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":
        return (v <= half) & (v >= -half) & (np.abs(u) <= (v + half) * 0.5)
    if shape == "bar":
        return (np.abs(u) <= half) & (np.abs(v) <= 0.35 * half)
    # cross
    return ((np.abs(u) <= half) & (np.abs(v) <= 0.3 * half)) | (
        (np.abs(v) <= half) & (np.abs(u) <= 0.3 * half)
    )


def _motion_state(label: str, t: float, motion: dict, cx: float, cy: float) -> dict:
    """Pose of the shape at normalised time t in [0, 1] for a motion class."""
    cyc, ph, amp = motion["cycles"], motion["phase"], motion["amplitude"]
    wave = math.sin(2 * math.pi * (cyc * t + ph))
    st = {"x": cx, "y": cy, "scale": 1.0, "angle": 0.0, "sx": 1.0, "sy": 1.0, "visible": True}
    travel = 0.35 * amp
    if label == "zoom_in":
        st["scale"] = 0.25 + 1.5 * t
    elif label == "zoom_out":
        st["scale"] = 1.75 - 1.5 * t
    elif label == "pulse":
        st["scale"] = 1.0 + 0.55 * wave
    elif label == "blink":
        st["visible"] = wave >= 0
    elif label == "rotate":
        st["angle"] = 2 * math.pi * cyc * t / 2
    elif label == "squash":
        st["sx"] = 1.0 + 0.6 * wave
        st["sy"] = 1.0 - 0.6 * wave
    elif label == "pass_through":
        st["x"] = -0.3 + 1.6 * t  # enters on the left, leaves on the right
    elif label == "move_left":
        st["x"] = 0.5 + travel - 2 * travel * t
    elif label == "move_right":
        st["x"] = 0.5 - travel + 2 * travel * t
    elif label == "move_up":
        st["y"] = 0.5 + travel - 2 * travel * t
    elif label == "move_down":
        st["y"] = 0.5 - travel + 2 * travel * t
    elif label != "static":
        raise ValueError(f"unknown motion class {label!r}; valid: {', '.join(MOTION_CLASSES)}")
    return st


def _background(style: str, app: dict, w: int, h: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    bg, bg2 = np.array(app["bg"], np.float32), np.array(app["bg2"], np.float32)
    if style == "style_a":  # smooth vertical gradient
        a = (yy / max(h - 1, 1))[..., None]
    else:  # checkerboard-ish texture
        f = app["texture_freq"]
        a = (0.5 + 0.5 * np.sign(np.sin(xx * f * 2 * np.pi / w) * np.sin(yy * f * 2 * np.pi / h)))[
            ..., None
        ] * 0.6
    return bg * (1 - a) + bg2 * a


def render_frames(plan: ClipPlan) -> Iterable[np.ndarray]:
    """Yield uint8 RGB frames (H, W, 3) of one clip."""
    w, h, app = plan.width, plan.height, plan.appearance
    base = _background(plan.style, app, w, h)
    fg = np.array(app["fg"], np.float32)
    short = min(w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    # Seeded by the clip's identity, never its path: the same corpus wherever it is generated.
    noise_rng = _rng(plan.seed, plan.style, plan.label, plan.index, "noise")
    for f in range(plan.n_frames):
        t = f / max(plan.n_frames - 1, 1)
        st = _motion_state(plan.label, t, plan.motion, app["cx"], app["cy"])
        frame = base.copy()
        if st["visible"]:
            half = 0.5 * app["size"] * short * st["scale"]
            mask = _shape_mask(
                app["shape"],
                xx - st["x"] * w,
                yy - st["y"] * h,
                half,
                st["angle"],
                st["sx"],
                st["sy"],
            )
            if plan.style == "style_b":  # striped fill
                stripes = 0.75 + 0.25 * np.sign(np.sin((xx + yy) * 0.35))
                frame[mask] = fg * stripes[mask][:, None]
            else:
                frame[mask] = fg
        if app["noise"] > 0:
            frame += noise_rng.normal(0, app["noise"], size=(h, w, 1)).astype(np.float32)
        yield (np.clip(frame, 0, 1) * 255).astype(np.uint8)


def encode_mp4(frames: Iterable[np.ndarray], path: Path, fps: int, gop: int | None = None) -> None:
    """Write frames as H.264 MP4 atomically (temp file + rename), so a crash leaves no half file."""
    import av  # noqa: PLC0415 - PyAV loads on the first decode, not on import

    with atomic_path(path, durable=False) as tmp, av.open(str(tmp), mode="w") as container:
        stream = None
        for frame in frames:
            if stream is None:
                stream = container.add_stream("libx264", rate=fps)
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"preset": "ultrafast", "crf": "28"}
                if gop is not None:  # fixed keyframe interval, no scene-cut keyframes
                    stream.options["x264-params"] = f"keyint={gop}:min-keyint={gop}:scenecut=0"
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)


def _render_clip(plan: ClipPlan) -> tuple[str, str]:
    path = Path(plan.path)
    # H.264 yuv420p needs even sizes.
    plan.width -= plan.width % 2
    plan.height -= plan.height % 2
    encode_mp4(render_frames(plan), path, plan.fps)
    return plan.path, sha256_file(path)


def _render_image(args: tuple[str, str, int, int]) -> tuple[str, str]:
    """Still image whose class is its appearance (shape + colour); pose and background vary."""

    path, label, seed, index = args
    rng = _rng(seed, "images", label, index)
    colour, shape = {
        "red_disc": ((0.9, 0.1, 0.1), "disc"),
        "green_square": ((0.1, 0.8, 0.2), "square"),
        "blue_triangle": ((0.15, 0.25, 0.9), "triangle"),
        "yellow_bar": ((0.95, 0.85, 0.1), "bar"),
    }[label]
    w, h = 160, 120
    app = {
        "bg": [float(x) for x in rng.uniform(0.0, 0.5, 3)],
        "bg2": [float(x) for x in rng.uniform(0.0, 0.5, 3)],
        "texture_freq": 3.0,
    }
    frame = _background("style_a", app, w, h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    half = 0.5 * min(w, h) * float(rng.uniform(0.3, 0.5))
    mask = _shape_mask(
        shape,
        xx - float(rng.uniform(0.35, 0.65)) * w,
        yy - float(rng.uniform(0.35, 0.65)) * h,
        half,
        float(rng.uniform(0, 2 * np.pi)),
        1.0,
        1.0,
    )
    frame[mask] = np.array(colour, np.float32) * float(rng.uniform(0.8, 1.0))
    frame += rng.normal(0, 0.03, size=(h, w, 1)).astype(np.float32)
    out = Path(path)
    with atomic_path(out, durable=False) as tmp:
        Image.fromarray((np.clip(frame, 0, 1) * 255).astype(np.uint8)).save(tmp)
    return path, sha256_file(out)


def _manifest_ok(root: Path, spec: CorpusSpec, verify: bool) -> bool:
    mpath = root / MANIFEST
    if not mpath.is_file():
        return False
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, json.JSONDecodeError):
        return False
    if manifest.get("key") != spec.key():
        return False
    for rel, digest in manifest.get("files", {}).items():
        p = root / rel
        if not p.is_file():
            return False
        if verify and sha256_file(p) != digest:
            return False
    return True


def ensure_corpus(
    root: str | Path,
    spec: CorpusSpec | None = None,
    workers: int | None = None,
    verify: bool = False,
) -> Path:
    """Generate the corpus under ``root`` unless an identical one is already there.

    ``verify=True`` re-hashes every file against the manifest (slower; catches bit rot);
    by default only presence and the settings key are checked, which keeps reuse instant.
    """

    root = Path(root)
    spec = spec or CorpusSpec()
    if _manifest_ok(root, spec, verify):
        log.info("Built-in corpus at %s is up to date (key %s)", root, spec.key())
        return root
    if root.exists():
        for sub in (*spec.styles, "images", MANIFEST):
            target = root / sub
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    root.mkdir(parents=True, exist_ok=True)
    plans = plan_corpus(spec, root)
    image_jobs = [
        (str(root / "images" / label / f"{label}_{i:03d}.png"), label, spec.seed, i)
        for label in IMAGE_CLASSES
        for i in range(spec.images_per_class)
    ]
    workers = workers or min(len(plans), os.cpu_count() or 1)
    files: dict[str, str] = {}
    log.info(
        "Generating built-in corpus (%d clips, %d images) in %s", len(plans), len(image_jobs), root
    )
    with Progress(transient=True) as progress, ProcessPoolExecutor(max_workers=workers) as pool:
        task = progress.add_task("generating corpus", total=len(plans) + len(image_jobs))
        for path, digest in pool.map(_render_clip, plans, chunksize=4):
            files[str(Path(path).relative_to(root))] = digest
            progress.advance(task)
        for path, digest in pool.map(_render_image, image_jobs, chunksize=8):
            files[str(Path(path).relative_to(root))] = digest
            progress.advance(task)
    manifest = {
        "key": spec.key(),
        "spec": asdict(spec),
        "clips": [asdict(p) | {"path": str(Path(p.path).relative_to(root))} for p in plans],
        "files": dict(sorted(files.items())),
    }
    atomic_write_text(
        root / MANIFEST, json.dumps(manifest, indent=1)
    )  # last: a partial corpus never looks complete
    return root
