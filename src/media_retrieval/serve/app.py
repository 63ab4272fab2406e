"""The search service: FastAPI over one :class:`MediaIndex`, loaded once and searched warm.

Why each guard is here (docs/search.md, "Service"):
- requests are checked before their body is read (:class:`RequestGuard`): the bearer token,
  the Host header when serving without a token (a web page cannot drive a loopback service
  through DNS rebinding), the declared size, how many uploads stream at once and how many
  bytes they spool in all, and how long one may take;
- uploads are data: size-limited while they stream in, typed by decoding them (not by their
  name, with the pixel limit checked before a frame is decoded), kept in a private temp folder
  and deleted after the request;
- connections are bounded and idle ones closed (:mod:`media_retrieval.serve.connections`);
- a ``path`` must resolve inside the index's media root (no ``..``, no symlink out);
- embedding runs in a bounded pool (``workers``); at most ``queue`` more requests wait, and
  beyond that the service answers 503 with ``Retry-After`` rather than queueing forever;
- a new index generation (written by ``media-retrieval index``) is picked up by the next
  request, while requests in flight finish on the generation they started with;
- every error is a JSON ``{"error": ...}`` with a 4xx/5xx status, and the service keeps answering.
"""

from __future__ import annotations

import asyncio
import hmac
import io
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image

from media_retrieval.data.video import guard_stream, load_frames, probe_image
from media_retrieval.errors import ConfigError, DataError, MediaRetrievalError
from media_retrieval.retrieval.media_index import MediaIndex
from media_retrieval.retrieval.rankers import RANKERS
from media_retrieval.serve.schemas import ErrorBody, Health, SearchHit, SearchResponse, Stats
from media_retrieval.utils.files import is_regular_file

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
    decoder: str | None = None  # None: the decoder the index's clip spec names
    max_uploads: int = 4  # uploads streaming in at once; more: 503
    max_spool_mb: float = 400.0  # bytes all uploads in flight may hold together; more: 503
    upload_timeout_s: float = 120.0  # longest an upload may take to arrive
    allowed_hosts: tuple[str, ...] = ()  # Host names accepted without a token, beside loopback's
    milvus_uri: str | None = None  # the user's Milvus server, for a server-backed index
    rankings: tuple[str, ...] = ("euclidean", "par")  # what /search's ranking= may name

    def __post_init__(self) -> None:
        checks = [
            (self.workers >= 1, "workers >= 1"),
            (self.queue >= 0, "queue >= 0"),
            (self.max_k >= 1, "max_k >= 1"),
            (self.max_upload_mb > 0, "max_upload_mb > 0"),
            (self.queue_timeout_s > 0, "queue_timeout_s > 0"),
            (self.max_uploads >= 1, "max_uploads >= 1"),
            (self.max_spool_mb >= self.max_upload_mb, "max_spool_mb >= max_upload_mb"),
            (self.upload_timeout_s > 0, "upload_timeout_s > 0"),
        ]
        bad = [want for ok, want in checks if not ok]
        if bad:
            raise ConfigError(f"serve: {', '.join(bad)} required")
        unknown = [r for r in self.rankings if r not in RANKERS]
        if unknown or not self.rankings:
            raise ConfigError(
                f"serve.rankings={list(self.rankings)}: each one of {', '.join(RANKERS)} (a "
                "plug-in's "
                "rankings once registered), at least one"
            )


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


LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
#: paths anyone may read without the token (the page and its files, health, the API description)
PUBLIC = ("/", "/health", "/docs", "/openapi.json", "/static/", "/swagger/", "/favicon.ico")


def host_name(header: str) -> str:
    """The name of a Host header without its port (``[::1]:8000`` -> ``::1``). Starlette's
    TrustedHostMiddleware splits on the first ``:``, which breaks IPv6 literals: hence ours."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1 : header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class RequestGuard:
    """ASGI middleware: what is decided before a request's body is read (see the module
    docstring). Written as middleware because FastAPI dependencies run only after a multipart
    body has been parsed and spooled to disk, too late for every check here."""

    def __init__(self, app, settings: ServiceSettings, hosts: frozenset[str]) -> None:  # noqa: ANN001 - ASGI app
        self.app, self.settings, self.hosts = app, settings, hosts
        self.limit = int(settings.max_upload_mb * 2**20)
        self.spool_limit = int(settings.max_spool_mb * 2**20)
        self.uploads = 0
        self.spooled = 0

    @staticmethod
    async def _answer(
        scope, receive, send, status: int, error: str, headers: dict | None = None
    ) -> None:  # noqa: ANN001
        await JSONResponse({"error": error}, status, headers=headers)(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        settings = self.settings
        if not settings.token:
            host = host_name(headers.get(b"host", b"").decode("latin-1"))
            if host not in self.hosts:
                return await self._answer(
                    scope,
                    receive,
                    send,
                    400,
                    f"Host {host[:80]!r} is not served here (without a "
                    "token only loopback names and serve.allowed_hosts are; this stops DNS "
                    "rebinding)",
                )
        path = scope.get("path", "")
        if settings.token and not (path == "/" or any(path.startswith(p) for p in PUBLIC[1:])):
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {settings.token}".encode()):
                return await self._answer(
                    scope,
                    receive,
                    send,
                    401,
                    "missing or wrong bearer token (Authorization: Bearer <token>)",
                    {"WWW-Authenticate": "Bearer"},
                )
        declared = headers.get(b"content-length")
        if (
            declared in (None, b"0") and b"transfer-encoding" not in headers
        ):  # no body: nothing to spool
            return await self.app(scope, receive, send)
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            return await self._answer(
                scope,
                receive,
                send,
                413,
                f"upload larger than the limit ({self.limit // 2**20} MiB)",
            )
        if self.uploads >= settings.max_uploads:
            return await self._answer(
                scope,
                receive,
                send,
                503,
                f"busy: {self.uploads} uploads are streaming in; retry shortly",
                {"Retry-After": "2"},
            )
        self.uploads += 1
        seen = 0
        deadline = time.monotonic() + settings.upload_timeout_s

        async def counted():
            nonlocal seen
            try:
                message = await asyncio.wait_for(receive(), max(deadline - time.monotonic(), 0.001))
            except asyncio.TimeoutError:
                raise HTTPException(
                    408, f"the upload did not arrive within {settings.upload_timeout_s:g} s"
                ) from None
            n = len(message.get("body", b""))
            seen += n
            self.spooled += n
            if seen > self.limit:
                raise HTTPException(
                    413, f"upload larger than the limit ({self.limit // 2**20} MiB)"
                )
            if self.spooled > self.spool_limit:
                raise HTTPException(
                    503,
                    "busy: uploads in flight hold the most the service spools; retry shortly",
                    headers={"Retry-After": "2"},
                )
            return message

        try:
            return await self.app(scope, counted, send)
        finally:
            self.uploads -= 1
            self.spooled -= seen


def sniff_media(path: Path) -> str:
    """``image`` or ``video`` by decoding the file's content (its name is not trusted); a
    DataError for anything else."""
    try:
        probe_image(path)
        return "image"
    except DataError:
        pass
    import av  # noqa: PLC0415 - av stays unloaded until used

    try:
        with av.open(str(path)) as container:
            if container.streams.video:
                stream = container.streams.video[0]
                guard_stream(path, stream)  # the pixel limit, before a frame is decoded
                for _ in container.decode(stream):  # one frame proves it decodes
                    return "video"
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - PyAV raises many types on hostile input
        raise DataError(
            f"not a video or image this service can decode ({type(exc).__name__})"
        ) from exc
    raise DataError("not a video or image this service can decode (no decodable video frame)")


def create_app(settings: ServiceSettings, index: MediaIndex | None = None) -> FastAPI:
    """The service over ``settings.index_dir`` (or an already opened ``index``)."""
    index = index or MediaIndex.open(
        settings.index_dir,
        trusted=settings.trusted,
        decoder=settings.decoder,
        search_options={"milvus_uri": settings.milvus_uri} if settings.milvus_uri else None,
    )
    admission = Admission(settings.workers, settings.queue, settings.queue_timeout_s)
    # thumbnails and previews decode too, but must not take the searches' places: their own pool,
    # with room for a page's worth of pictures waiting
    pictures = Admission(
        settings.workers, settings.queue + 4 * settings.max_k, settings.queue_timeout_s
    )
    uploads = Path(tempfile.mkdtemp(prefix="media-retrieval-uploads-"))

    @asynccontextmanager
    async def lifespan(app: FastAPI):  # noqa: ANN202
        yield
        shutil.rmtree(uploads, ignore_errors=True)
        index.close()

    app = FastAPI(
        title="media-retrieval",
        version="1",
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        description="Content-based video and image search: upload a clip or an image, get the "
        "indexed footage whose content is alike (Euclidean ranking, PAR flags).",
    )
    app.state.index, app.state.settings, app.state.admission = index, settings, admission
    app.add_middleware(
        RequestGuard,
        settings=settings,
        hosts=LOOPBACK_HOSTS | {h.lower() for h in settings.allowed_hosts},
    )
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    from swagger_ui_bundle import swagger_ui_path  # noqa: PLC0415 - swagger_ui_bundle stays unloaded until used

    app.mount("/swagger", StaticFiles(directory=swagger_ui_path), name="swagger")

    # ------------------------------------------------------------------ errors as JSON
    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = (exc.errors() or [{}])[0]
        where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "request"
        return JSONResponse({"error": f"{where}: {first.get('msg', 'invalid value')}"}, 422)

    @app.exception_handler(Overloaded)
    async def _overloaded(request: Request, exc: Overloaded) -> JSONResponse:
        return JSONResponse(
            {"error": "busy: every embedding worker is taken and the queue is full; retry shortly"},
            503,
            headers={"Retry-After": "2"},
        )

    @app.exception_handler(MediaRetrievalError)
    async def _domain_error(request: Request, exc: MediaRetrievalError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, 422 if isinstance(exc, DataError) else 400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return JSONResponse(
            {"error": f"internal error ({type(exc).__name__}); see the service log"}, 500
        )

    # ------------------------------------------------------------------ freshness
    def current() -> MediaIndex:
        """The index, switched to the newest generation first (in-flight requests keep theirs)."""
        try:
            index.reload()
        except MediaRetrievalError as exc:  # a broken new generation: keep serving the one we have
            log.warning("index reload failed, still serving %s: %s", index.generation, exc)
        return index

    auth: list = []  # the token is checked by RequestGuard, before a body is read
    errors = {c: {"model": ErrorBody} for c in (400, 401, 404, 413, 415, 422, 503)}

    # ------------------------------------------------------------------ endpoints
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="media-retrieval API",
            swagger_js_url="/swagger/swagger-ui-bundle.js",
            swagger_css_url="/swagger/swagger-ui.css",
            swagger_favicon_url="/swagger/favicon-32x32.png",
        )

    @app.get("/health", response_model=Health)
    def health() -> Health:
        return Health(status="ok", generation=index.generation)

    @app.get("/stats", response_model=Stats, responses=errors, dependencies=auth)
    def stats() -> Stats:
        idx = current()
        m = idx.manifest
        return Stats(
            items=len(idx.segments),
            dim=int(idx.vectors.shape[1]),
            generation=idx.generation,
            model=m.get("model_name") or m.get("model_class"),
            backend=m.get("backend"),
            par_delta=idx.par_delta,
            clip_spec=idx.clip_spec.key(),
            in_flight=admission.inside,
            capacity=admission.capacity,
        )

    @app.post("/search", response_model=SearchResponse, responses=errors, dependencies=auth)
    def search(
        file: Annotated[UploadFile | None, File(description="a video or an image")] = None,
        path: Annotated[
            str | None, Query(description="or: a file under the index's media root")
        ] = None,
        k: Annotated[int, Query(ge=1)] = 10,
        delta: Annotated[
            float | None, Query(ge=-1.0, le=1.0, description="PAR's delta; default the model's")
        ] = None,
        group_by: Annotated[str | None, Query(pattern="^video$")] = None,
        ranking: Annotated[
            str, Query(description="a ranking method of serve.rankings (default par)")
        ] = "par",
    ) -> SearchResponse:
        if ranking not in settings.rankings:
            raise HTTPException(
                422,
                f"ranking={ranking[:40]!r}; this service offers: {', '.join(settings.rankings)}",
            )
        if (file is None) == (path is None):
            raise HTTPException(
                400, "give exactly one of: an uploaded file (multipart field 'file') or path="
            )
        if k > settings.max_k:
            raise HTTPException(400, f"k={k} is over the service's limit of {settings.max_k}")
        idx = current()
        with (
            _query_file(file, path, idx.media_root, uploads) as (query_path, name),
            admission.slot(),
        ):
            result = idx.search_one(
                query_path, k=k, delta=delta, group_by=group_by, ranking=ranking
            )
        return SearchResponse(
            query=name,
            k=k,
            delta=result.delta,
            ranking=ranking,
            group_by=group_by,
            generation=result.generation,
            hits=[SearchHit.from_hit(h) for h in result.hits],
        )

    @app.get(
        "/items/{key}/thumbnail",
        responses={**errors, 200: {"content": {"image/jpeg": {}}}},
        dependencies=auth,
    )
    def thumbnail(key: str) -> Response:
        seg, path = _segment_file(current(), key)
        with pictures.slot():
            return Response(
                _jpeg(path, seg.start_s, seg.end_s),
                media_type="image/jpeg",
                headers={"Cache-Control": "max-age=3600"},
            )

    @app.get(
        "/items/{key}/preview",
        responses={**errors, 200: {"content": {"image/gif": {}}}},
        dependencies=auth,
    )
    def preview(key: str) -> Response:
        """A short animated preview of a video hit (a still frame cannot show motion)."""
        seg, path = _segment_file(current(), key)
        with pictures.slot():
            if seg.media_type == "image":
                return Response(_jpeg(path, None, None), media_type="image/jpeg")
            return Response(
                _gif(path, seg.start_s, seg.end_s),
                media_type="image/gif",
                headers={"Cache-Control": "max-age=3600"},
            )

    return app


@contextmanager
def _query_file(
    file: UploadFile | None, path: str | None, media_root: Path, uploads: Path
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
        typed = raw.rename(
            folder / ("upload.png" if kind == "image" else "upload.mp4")
        )  # loaders pick by suffix
        yield typed, Path(file.filename or "upload").name
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def inside(media_root: Path, path: str) -> Path:
    """``path`` (relative to the media root, or absolute) resolved, refused unless it stays
    inside the media root and is a regular file."""
    if "\x00" in path:
        raise HTTPException(400, "path contains a NUL byte")
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
        raise HTTPException(
            404, f"no indexed item with key {key!r} in generation {index.generation}"
        )
    return seg, inside(index.media_root, seg.rel_path)


def _jpeg(path: Path, start_s: float | None, end_s: float | None, size: int = 320) -> bytes:
    from media_retrieval.reporting.search_output import thumbnail  # noqa: PLC0415 - reporting.search_output (and what it loads) stays unloaded until used

    img = Image.fromarray(thumbnail(str(path), start_s, end_s))
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def _gif(
    path: Path, start_s: float | None, end_s: float | None, frames: int = 8, size: int = 240
) -> bytes:
    clip = load_frames(str(path), frames, min_frames=1, start_s=start_s, end_s=end_s)
    images = []
    for f in clip:
        img = Image.fromarray(f.permute(1, 2, 0).numpy())
        img.thumbnail((size, size))
        images.append(img)
    buf = io.BytesIO()
    images[0].save(buf, format="GIF", save_all=True, append_images=images[1:], duration=180, loop=0)
    return buf.getvalue()
