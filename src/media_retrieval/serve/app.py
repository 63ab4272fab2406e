"""The search service: FastAPI over one :class:`MediaIndex`, loaded once and searched warm.

Why each guard is here (docs/search.md, "Service"):
- uploads are data: size-limited while they stream in (a declared size over the limit is
  refused before a byte is read), typed by decoding them (not by their name), kept in a
  private temp folder and deleted after the request;
- a ``path`` must resolve inside the index's media root (no ``..``, no symlink out);
- embedding runs in a bounded pool (``workers``); at most ``queue`` more requests wait, and
  beyond that the service answers 503 with ``Retry-After`` rather than queueing forever;
- a new index generation (written by ``media-retrieval index``) is picked up by the next
  request, while requests in flight finish on the generation they started with;
- every error is a JSON ``{"error": ...}`` with a 4xx/5xx status, and the service keeps answering.
"""

from __future__ import annotations

import hmac
import io
import logging
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from media_retrieval.errors import ConfigError, DataError, MediaRetrievalError
from media_retrieval.retrieval.media_index import MediaIndex
from media_retrieval.serve.schemas import ErrorBody, Health, SearchHit, SearchResponse, Stats

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"


@dataclass
class ServiceSettings:
    """``configs/serve.yaml``'s knobs (see there for what each does)."""

    index_dir: str
    workers: int = 2
    queue: int = 8
    queue_timeout_s: float = 30.0
    max_upload_mb: float = 200.0
    max_k: int = 100
    token: str | None = None
    trusted: bool | str = "auto"
    decoder: str = "seek"

    def __post_init__(self) -> None:
        if self.workers < 1 or self.queue < 0 or self.max_k < 1 or self.max_upload_mb <= 0:
            raise ConfigError("serve: workers >= 1, queue >= 0, max_k >= 1 and max_upload_mb > 0 are required")


class Overloaded(Exception):
    """Every embedding worker is busy and the waiting line is full."""


class Admission:
    """A bounded worker pool in front of the model: ``workers`` run at once, ``queue`` more may
    wait up to ``timeout_s``; anyone beyond is refused at once (503)."""

    def __init__(self, workers: int, queue: int, timeout_s: float) -> None:
        self._running = threading.BoundedSemaphore(workers)
        self._lock = threading.Lock()
        self.inside, self.capacity, self.timeout_s = 0, workers + queue, timeout_s

    @contextmanager
    def slot(self) -> Iterator[None]:
        with self._lock:
            if self.inside >= self.capacity:
                raise Overloaded
            self.inside += 1
        try:
            if not self._running.acquire(timeout=self.timeout_s):
                raise Overloaded
            try:
                yield
            finally:
                self._running.release()
        finally:
            with self._lock:
                self.inside -= 1


class BodyLimit:
    """ASGI middleware: request bodies over ``limit`` bytes end with 413, whether the size is
    declared (refused before reading) or not (counted while streaming)."""

    def __init__(self, app, limit: int) -> None:  # noqa: ANN001 - an ASGI app
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            response = JSONResponse({"error": f"upload larger than the limit ({self.limit // 2**20} MiB)"}, 413)
            return await response(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:
                raise HTTPException(413, f"upload larger than the limit ({self.limit // 2**20} MiB)")
            return message

        return await self.app(scope, counted, send)


def sniff_media(path: Path) -> str:
    """``image`` or ``video`` by decoding the file's content (its name is not trusted); a
    DataError for anything else."""
    from media_retrieval.data.video import probe_image

    try:
        probe_image(path)
        return "image"
    except DataError:
        pass
    import av

    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                stream = container.streams.video[0]
                for _ in container.decode(stream):  # one frame proves it decodes
                    return "video"
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types on hostile input
        raise DataError(f"not a video or image this service can decode ({type(exc).__name__})") from exc
    raise DataError("not a video or image this service can decode (no decodable video frame)")


def create_app(settings: ServiceSettings, index: MediaIndex | None = None) -> FastAPI:
    """The service over ``settings.index_dir`` (or an already opened ``index``)."""
    index = index or MediaIndex.open(settings.index_dir, trusted=settings.trusted, decoder=settings.decoder)
    admission = Admission(settings.workers, settings.queue, settings.queue_timeout_s)
    # thumbnails and previews decode too, but must not take the searches' places: their own pool,
    # with room for a page's worth of pictures waiting
    pictures = Admission(settings.workers, settings.queue + 4 * settings.max_k, settings.queue_timeout_s)
    uploads = Path(tempfile.mkdtemp(prefix="media-retrieval-uploads-"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        shutil.rmtree(uploads, ignore_errors=True)
        index.close()

    app = FastAPI(title="media-retrieval", version="1", docs_url=None, redoc_url=None, lifespan=lifespan,
                  description="Content-based video and image search: upload a clip or an image, get the indexed "
                              "footage whose content is alike (Euclidean ranking, PAR flags).")
    app.state.index, app.state.settings, app.state.admission = index, settings, admission
    app.add_middleware(BodyLimit, limit=int(settings.max_upload_mb * 2**20))
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    # ------------------------------------------------------------------ errors as JSON
    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse({"error": "busy: every embedding worker is taken and the queue is full; retry shortly"},
                            503, headers={"Retry-After": "2"})

    @app.exception_handler(MediaRetrievalError)
    async def _domain_error(request: Request, exc: MediaRetrievalError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 422 if isinstance(exc, DataError) else 400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse({"error": f"internal error ({type(exc).__name__}); see the service log"}, 500)

    # ------------------------------------------------------------------ auth and freshness
    def authorised(request: Request) -> None:
        if not settings.token:
            return
        given = request.headers.get("authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token (Authorization: Bearer <token>)",
                                headers={"WWW-Authenticate": "Bearer"})

    def current() -> MediaIndex:
        """The index, switched to the newest generation first (in-flight requests keep theirs)."""
        try:
            index.reload()
        except MediaRetrievalError as exc:  # a broken new generation: keep serving the one we have
            log.warning("index reload failed, still serving %s: %s", index.generation, exc)
        return index

    auth = [Depends(authorised)]
    errors = {c: {"model": ErrorBody} for c in (400, 401, 404, 413, 415, 422, 503)}

    # ------------------------------------------------------------------ endpoints
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="media-retrieval API",
                                   swagger_js_url="/swagger/swagger-ui-bundle.js",
                                   swagger_css_url="/swagger/swagger-ui.css",
                                   swagger_favicon_url="/swagger/favicon-32x32.png")

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", generation=index.generation)

    @app.get("/stats", response_model=Stats, responses=errors, dependencies=auth)
    def stats() -> Stats:
        idx = current()
        m = idx.manifest
        return Stats(items=len(idx.segments), dim=int(idx.vectors.shape[1]), generation=idx.generation,
                     model=m.get("model_name") or m.get("model_class"), backend=m.get("backend"),
                     par_delta=idx.par_delta, clip_spec=idx.clip_spec.key(), in_flight=admission.inside,
                     capacity=admission.capacity)

    @app.post("/search", response_model=SearchResponse, responses=errors, dependencies=auth)
    def search(
        file: Annotated[UploadFile | None, File(description="a video or an image")] = None,
        path: Annotated[str | None, Query(description="or: a file under the index's media root")] = None,
        k: Annotated[int, Query(ge=1)] = 10,
        delta: Annotated[float | None, Query(ge=-1.0, le=1.0, description="PAR's delta; default the model's")] = None,
        group_by: Annotated[str | None, Query(pattern="^video$")] = None,
    ) -> SearchResponse:
        if (file is None) == (path is None):
            raise HTTPException(400, "give exactly one of: an uploaded file (multipart field 'file') or path=")
        if k > settings.max_k:
            raise HTTPException(400, f"k={k} is over the service's limit of {settings.max_k}")
        idx = current()
        with _query_file(file, path, idx.media_root, uploads) as (query_path, name), admission.slot():
            result = idx.search_one(query_path, k=k, delta=delta, group_by=group_by)
        return SearchResponse(query=name, k=k, delta=result.delta, group_by=group_by, generation=result.generation,
                              hits=[SearchHit.from_hit(h) for h in result.hits])

    @app.get("/items/{key}/thumbnail", responses={**errors, 200: {"content": {"image/jpeg": {}}}}, dependencies=auth)
    def thumbnail(key: str) -> Response:
        seg, path = _segment_file(current(), key)
        with pictures.slot():
            return Response(_jpeg(path, seg.start_s, seg.end_s), media_type="image/jpeg",
                            headers={"Cache-Control": "max-age=3600"})

    @app.get("/items/{key}/preview", responses={**errors, 200: {"content": {"image/gif": {}}}}, dependencies=auth)
    def preview(key: str) -> Response:
        """A short animated preview of a video hit (a still frame cannot show motion)."""
        seg, path = _segment_file(current(), key)
        with pictures.slot():
            if seg.media_type == "image":
                return Response(_jpeg(path, None, None), media_type="image/jpeg")
            return Response(_gif(path, seg.start_s, seg.end_s), media_type="image/gif",
                            headers={"Cache-Control": "max-age=3600"})

    return app


@contextmanager
def _query_file(file: UploadFile | None, path: str | None, media_root: Path, uploads: Path
                ) -> Iterator[tuple[Path, str]]:
    """The query as a local file: a checked path under the media root, or the upload copied
    into a private temp file (deleted afterwards), typed by decoding."""
    if path is not None:
        yield inside(media_root, path), path
        return
    assert file is not None
    folder = Path(tempfile.mkdtemp(dir=uploads))
    try:
        raw = folder / "upload"
        with open(raw, "wb") as out:
            shutil.copyfileobj(file.file, out, length=2**20)
        if raw.stat().st_size == 0:
            raise HTTPException(400, "empty upload")
        try:
            kind = sniff_media(raw)
        except DataError as exc:
            raise HTTPException(415, f"{file.filename or 'upload'}: {exc}") from exc
        typed = raw.rename(folder / ("upload.png" if kind == "image" else "upload.mp4"))  # loaders pick by suffix
        yield typed, Path(file.filename or "upload").name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def inside(media_root: Path, path: str) -> Path:
    """``path`` (relative to the media root, or absolute) resolved, refused unless it stays
    inside the media root and is a regular file."""
    from media_retrieval.utils.files import is_regular_file

    root = media_root.resolve()
    p = Path(path)
    resolved = (p if p.is_absolute() else root / p).resolve()
    if resolved != root and root not in resolved.parents:
        raise HTTPException(400, f"path {path!r} is outside the index's media root")
    if not resolved.exists():
        raise HTTPException(404, f"no file {path!r} under the media root")
    if not is_regular_file(resolved):
        raise HTTPException(400, f"{path!r} is not a regular file")
    return resolved


def _segment_file(index: MediaIndex, key: str):  # noqa: ANN202 - (Segment, Path)
    seg = index.segment(key)
    if seg is None:
        raise HTTPException(404, f"no indexed item with key {key!r} in generation {index.generation}")
    return seg, inside(index.media_root, seg.rel_path)


def _jpeg(path: Path, start_s: float | None, end_s: float | None, size: int = 320) -> bytes:
    from PIL import Image

    from media_retrieval.reporting.search_output import thumbnail

    img = Image.fromarray(thumbnail(str(path), start_s, end_s))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _gif(path: Path, start_s: float | None, end_s: float | None, frames: int = 8, size: int = 240) -> bytes:
    from PIL import Image

    from media_retrieval.data.video import load_frames

    clip = load_frames(str(path), frames, min_frames=1, start_s=start_s, end_s=end_s)
    images = []
    for f in clip:
        img = Image.fromarray(f.permute(1, 2, 0).numpy())
        img.thumbnail((size, size))
        images.append(img)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=180, loop=0)
    return buf.getvalue()
