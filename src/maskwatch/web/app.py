"""The HTTP service: ``POST /v1/detect``, health and readiness, metrics, API docs and the web page.

A detection request goes: API key -> body read under a byte limit, a time limit and a server-wide byte
budget -> busy check (only complete bodies hold a queue slot) -> multipart or raw body -> magic-byte
sniffing -> pixel count from the header -> ``MaskDetector.analyze`` in the worker pool (photos over
LARGE_IMAGE_PIXELS one at a time) -> the CLI's JSON (or an annotated JPEG). Slow and idle connections are
bounded before the app sees them: see ``maskwatch.web.connections``. Anything wrong with the input ends
in a 4xx whose JSON body has an ``error`` string; a 5xx means a bug or an overloaded server, never a bad
upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import hmac
import logging
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import cv2
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders, UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from maskwatch import __version__
from maskwatch.images import ImageError, PixelLimitError, image_pixels, read_image
from maskwatch.labels import INCORRECT_MASK
from maskwatch.outputs import draw_results
from maskwatch.pipeline import MaskDetector
from maskwatch.results import ImageResult
from maskwatch.web.metrics import CONTENT_TYPE, Metrics

log = logging.getLogger("maskwatch.web")
# The multipart parser logs a warning for each broken body before it raises; the client gets that as a 400,
# so the server log would only repeat it, unprefixed, once per bad request.
logging.getLogger("python_multipart").setLevel(logging.ERROR)

STATIC_DIR = Path(__file__).resolve().parent / "static"
MB = 1024 * 1024
# A multipart body carries boundaries and part headers around the file: allow for them on top of the
# file limit, so that a file of exactly --max-upload-mb is accepted either way it is sent.
MULTIPART_ALLOWANCE = 64 * 1024
MAX_FILENAME = 255
JPEG_QUALITY = 90
# libjpeg cannot write a side longer than this: an annotated image that large is sent as PNG instead.
JPEG_MAX_SIDE = 65_500
# Photos over this many pixels are analysed one at a time: a 40 MP JPEG (626 KB) took about 1 GB at its
# peak in a worker (decode plus YuNet passes up to 4096 px), and two at once took 2.45 GB. Smaller photos
# (12 MP: a 4000x3000 phone picture) keep every worker.
LARGE_IMAGE_PIXELS = 12_000_000

# The formats we accept, told by their first bytes: a filename or a Content-Type header proves nothing.
MAGIC = (
    (b"\xff\xd8\xff", "JPEG"),
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
ACCEPTED = "JPEG, PNG, WebP, GIF, BMP or TIFF"

# Labels for metrics: fixed routes by name, so that scanners probing random paths cannot blow up the
# number of series.
ROUTES = ("/", "/docs", "/openapi.json", "/healthz", "/readyz", "/metrics", "/v1/detect")

# The page and the docs load only their own files: a stray CDN reference would fail here, not silently
# reach out. 'blob:' is for the previews of picked photos and the camera stream.
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True)
class ServerConfig:
    """What ``maskwatch serve`` lets an operator set, besides the models."""

    max_upload_bytes: int = 20 * MB
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    workers: int = os.cpu_count() or 1
    # Requests admitted beyond the busy workers before new ones get 503: each holds its upload in memory.
    queue_limit: int = 32
    # Seconds a client may take to send its whole body before it gets 408. The body is read before the
    # request takes a queue slot, so slow clients never lock out the others.
    read_timeout: float = 30.0

    @property
    def upload_budget(self) -> int:
        """Bytes of request bodies held at once, server-wide: as many full uploads as the queue and the
        workers hold. Past it, new bodies get 503, however many connections trickle them in."""
        return (self.queue_limit + self.workers) * (self.max_upload_bytes + MULTIPART_ALLOWANCE)


class ApiError(Exception):
    """A request we refuse: becomes ``status`` with a JSON body that has an ``error`` string."""

    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body if body is not None else {"error": message}
        self.headers = headers


# Response shapes, for the OpenAPI document only: the endpoint returns ImageResult.to_dict() itself.
class FaceOut(BaseModel):
    box: list[float]
    score: float
    landmarks: list[list[float]]
    label: str = Field(description="with_mask, without_mask or incorrect_mask (a mask below the nose)")
    mask_probability: float = Field(description="P(with_mask): the mask is worn correctly")
    probabilities: dict[str, float] = Field(description="P(label) for every label the model knows")


class DetectionOut(BaseModel):
    file: str
    width: int
    height: int
    faces: list[FaceOut]
    error: str | None


class ErrorOut(BaseModel):
    error: str


DETECT_BODY = {
    "requestBody": {
        "required": True,
        "description": "The image: a multipart form with a `file` field, or the raw bytes as the body.",
        "content": {
            "multipart/form-data": {
                "schema": {"type": "object", "required": ["file"],
                           "properties": {"file": {"type": "string", "format": "binary"}}},
            },
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
            "image/png": {"schema": {"type": "string", "format": "binary"}},
        },
    }
}
DETECT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": DetectionOut, "description": "Faces found (JSON), or the annotated image with annotated=1 "
          "(JPEG; PNG when a side is over 65,500 pixels)", "content": {"image/jpeg": {}, "image/png": {}}},
    400: {"model": ErrorOut, "description": "Empty, corrupt or truncated image, or a malformed request"},
    401: {"model": ErrorOut, "description": "Missing or wrong API key (when the server has one)"},
    408: {"model": ErrorOut, "description": "The body took longer than --read-timeout to arrive"},
    413: {"model": ErrorOut, "description": "Upload over --max-upload-mb, or image over --max-pixels"},
    415: {"model": ErrorOut, "description": f"Not an image of a supported type ({ACCEPTED})"},
    422: {"model": ErrorOut, "description": "The annotated image could not be encoded; ask for JSON instead"},
    503: {"model": ErrorOut, "description": "Too many requests waiting; retry after a moment"},
}
FRAMES_HEADER = "X-Maskwatch-Frames"  # set when the file holds several frames: only the first was judged


class ByteBudget:
    """Bytes of uploads held in memory, server-wide (touched only on the event loop thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> None:
        if self.used + size > self.limit:
            raise ApiError(503, "server busy: too many uploads in progress, retry shortly",
                           headers={"Retry-After": "1"})
        self.used += size


class Held:
    """What one request took from a ByteBudget; ``release`` gives it all back."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.size = 0

    def take(self, size: int) -> None:
        self.budget.take(size)
        self.size += size

    def release(self) -> None:
        self.budget.used -= self.size
        self.size = 0


class Service:
    """The state the routes share: the models, the worker pool, the limits and the counters."""

    def __init__(self, detector: MaskDetector, config: ServerConfig) -> None:
        self.detector = detector
        self.config = config
        self.metrics = Metrics(routes=(*ROUTES, "/static", "other"))
        self.executor: ThreadPoolExecutor | None = None
        self.ready = False
        self.pending = 0  # requests with a complete body, waiting or analysed; touched only on the event loop
        self.uploads = ByteBudget(config.upload_budget)
        self.large_images = threading.Semaphore(1)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        if self.executor is None:
            raise ApiError(503, "server is not ready")
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def warm_up(self) -> None:
        """One pass through both models, so the first user does not pay for lazy initialisation."""
        blank = np.zeros((240, 320, 3), np.uint8)
        self.detector.detect_array(blank)
        size = self.detector.classifier.input_size
        self.detector.classifier.mask_probability([np.zeros((size, size, 3), np.uint8)])

    def analyze(self, data: bytes, name: str, annotated: bool) -> Analysed:
        """Runs in a worker thread: large photos one at a time, and their memory given back afterwards."""
        if image_pixels(data) <= LARGE_IMAGE_PIXELS:
            return self._analyze(data, name, annotated)
        with self.large_images:
            try:
                return self._analyze(data, name, annotated)
            finally:
                release_free_memory()

    def _analyze(self, data: bytes, name: str, annotated: bool) -> Analysed:
        """Decode (under the pixel limit), detect, and draw if asked."""
        try:
            decoded = read_image(data, self.detector.max_pixels)
        except PixelLimitError as exc:  # the decoder's own limit, so this and the CLI always agree
            raise ApiError(413, str(exc)) from None
        except ImageError as exc:
            result = ImageResult(file=name, error=str(exc))
            self.metrics.record_image(False, [])
            return Analysed(result)
        image = decoded.image
        result = self.detector.result(image, name)
        self.metrics.record_image(True, [face.label for face in result.faces])
        drawn = encode_annotated(draw_results(image, result.faces)) if annotated else None
        return Analysed(result, drawn, decoded.frames)


@dataclass(frozen=True)
class Drawn:
    """The annotated image, encoded."""

    data: bytes
    media_type: str


@dataclass(frozen=True)
class Analysed:
    """What a worker hands back for one upload."""

    result: ImageResult
    drawn: Drawn | None = None
    frames: int = 1


def release_free_memory() -> None:
    """Hand freed heap back to the system (glibc's malloc_trim); elsewhere a no-op.

    After a 40 MP photo the process kept about 40 MB of freed heap that only this returns (measured on
    top of what dropping YuNet's buffers gives back: 844 -> 154 -> 114 MB).
    """
    name = ctypes.util.find_library("c")
    if not name:
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(name).malloc_trim(0)


def encode_annotated(image: np.ndarray) -> Drawn:
    """JPEG when libjpeg can hold it, else (a side over 65,500 px, or a failed JPEG) lossless PNG.

    An image neither can encode is refused with 422, never a 500: the JSON answer still works.
    """
    attempts: list[tuple[str, str, list[int]]] = [(".png", "image/png", [cv2.IMWRITE_PNG_COMPRESSION, 3])]
    if max(image.shape[:2]) <= JPEG_MAX_SIDE:
        attempts.insert(0, (".jpg", "image/jpeg", [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]))
    for ext, media_type, params in attempts:
        try:
            ok, encoded = cv2.imencode(ext, image, params)
        except cv2.error:
            ok = False
        if ok:
            return Drawn(encoded.tobytes(), media_type)
    height, width = image.shape[:2]
    raise ApiError(422, f"the annotated {width}x{height} image cannot be encoded; ask for JSON without annotated=1")


def create_app(detector: MaskDetector, config: ServerConfig | None = None) -> FastAPI:
    """The ASGI app around an already loaded detector (the models load once, before serving)."""
    service = Service(detector, config or ServerConfig())

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        try:
            # Inside the try: a failed warm-up must still shut the pool down.
            service.executor = ThreadPoolExecutor(max_workers=service.config.workers,
                                                  thread_name_prefix="maskwatch-infer")
            await service.run(service.warm_up)
            service.ready = True
            yield
        finally:
            service.ready = False
            if service.executor is not None:
                service.executor.shutdown(wait=True, cancel_futures=True)
            service.executor = None

    app = FastAPI(
        title="maskwatch", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
        description="Find every face in a photo and tell whether it wears a face mask.",
    )
    app.state.service = service
    add_error_handlers(app)
    add_site_routes(app, service)
    app.include_router(detect_router(service))
    app.add_middleware(ObserveMiddleware, metrics=service.metrics)
    if service.config.cors_origins:
        # Outermost, so that preflight requests are answered before the API key is asked for.
        app.add_middleware(
            CORSMiddleware, allow_origins=list(service.config.cors_origins), allow_methods=["GET", "POST"],
            allow_headers=["Content-Type", "X-API-Key", "Authorization"],
            expose_headers=["X-Maskwatch-Faces", "X-Maskwatch-With-Mask", "X-Maskwatch-Incorrect-Mask",
                            FRAMES_HEADER],
        )
    return app


def add_site_routes(app: FastAPI, service: Service) -> None:
    """The page, its files, the docs page, health, readiness and metrics."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        # Our own page that renders /openapi.json: FastAPI's Swagger UI would load its code from a CDN.
        return FileResponse(STATIC_DIR / "docs.html")

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: models loaded and the worker pool running",
             responses={503: {"model": ErrorOut}})
    async def readyz() -> JSONResponse:
        if not service.ready:
            body = {"status": "not ready", "error": "models are loading or the server is stopping"}
            return JSONResponse(body, status_code=503)
        # The labels answers can carry: without incorrect_mask, the server runs in two-class mode (the page
        # then reads a no-mask face's confidence as 1 - P(with_mask)).
        return JSONResponse({"status": "ready", "workers": service.config.workers,
                             "labels": service.detector.labels})

    # With an API key, /metrics needs it too: its face counts by label tell what the camera saw. Prometheus
    # sends it with `authorization: {credentials: KEY}`. /docs and /openapi.json stay open: they describe
    # the API that ships with the package, and hold no data.
    keyed = [Depends(api_key_checker(service.config.api_key))] if service.config.api_key else []

    @app.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse, dependencies=keyed,
             responses={401: {"model": ErrorOut, "description": "Missing or wrong API key (when one is set)"}})
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(service.metrics.render(), media_type=CONTENT_TYPE)


def detect_router(service: Service) -> APIRouter:
    dependencies = [Depends(api_key_checker(service.config.api_key))] if service.config.api_key else []
    router = APIRouter(prefix="/v1", dependencies=dependencies)

    @router.post("/detect", summary="Find faces and tell who wears a mask", responses=DETECT_RESPONSES,
                 openapi_extra=DETECT_BODY, response_model=None)
    async def detect(
        request: Request,
        annotated: Annotated[bool, Query(description="Return the photo with boxes drawn, as JPEG "
                                                     "(PNG if a side is over 65,500 pixels)")] = False,
    ) -> Response:
        # Only a complete body takes a queue slot: 34 clients trickling their bodies used to hold every slot
        # (2 workers + 32) and lock everyone else out with 503 for --read-timeout. The body read is bounded
        # in time (--read-timeout) and in bytes, per request and server-wide (ServerConfig.upload_budget).
        check_not_busy(service)
        held = Held(service.uploads)
        try:
            data, name = await read_upload_within(request, service.config, held)
            check_not_busy(service)
            service.pending += 1
            service.metrics.add_in_flight(1)
            try:
                analysed = await service.run(service.analyze, data, name, annotated)
            finally:
                service.pending -= 1
                service.metrics.add_in_flight(-1)
        finally:
            held.release()
        return detection_response(analysed)

    return router


def check_not_busy(service: Service) -> None:
    if service.pending >= service.config.queue_limit + service.config.workers:
        raise ApiError(503, "server busy, retry shortly", headers={"Retry-After": "1"})


def detection_response(analysed: Analysed) -> Response:
    result, drawn = analysed.result, analysed.drawn
    if not result.ok:
        # The decoder could not read it: the body is the CLI's result line, whose "error" says why.
        raise ApiError(400, result.error or "unreadable image", body=result.to_dict())
    # A multi-frame file (animated GIF/WebP, a TIFF with pages) is judged on its first frame; say so.
    frames = {FRAMES_HEADER: str(analysed.frames)} if analysed.frames > 1 else {}
    if drawn is None:
        return JSONResponse(result.to_dict(), headers=frames)
    with_mask = sum(face.has_mask for face in result.faces)
    incorrect = sum(face.label == INCORRECT_MASK for face in result.faces)
    return Response(drawn.data, media_type=drawn.media_type, headers={
        "X-Maskwatch-Faces": str(len(result.faces)), "X-Maskwatch-With-Mask": str(with_mask),
        "X-Maskwatch-Incorrect-Mask": str(incorrect), **frames,
    })


# auto_error=False: a missing key is ours to report, as JSON with "error" like every other refusal.
API_KEY_HEADER = APIKeyHeader(name="X-API-Key", auto_error=False)
BEARER = HTTPBearer(auto_error=False)


def api_key_checker(key: str) -> Callable[..., Awaitable[None]]:
    expected = key.encode()

    async def require_api_key(
        header_key: Annotated[str | None, Security(API_KEY_HEADER)] = None,
        bearer: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)] = None,
    ) -> None:
        supplied = header_key if header_key is not None else (bearer.credentials if bearer else None)
        # compare_digest: the time taken must not tell how much of a guessed key was right.
        if supplied is None or not hmac.compare_digest(supplied.encode(), expected):
            message = "missing API key" if supplied is None else "wrong API key"
            raise ApiError(401, f"{message}: send it as X-API-Key or Authorization: Bearer",
                           headers={"WWW-Authenticate": "Bearer"})

    return require_api_key


async def read_upload_within(request: Request, config: ServerConfig, held: Held | None = None) -> tuple[bytes, str]:
    """``read_upload`` bounded in time: a client trickling its body must not hold its connection for ever."""
    try:
        return await asyncio.wait_for(read_upload(request, config.max_upload_bytes, held), config.read_timeout)
    except TimeoutError:
        raise ApiError(408, f"the body did not arrive within {config.read_timeout:g} s",
                       headers={"Connection": "close"}) from None


async def read_upload(request: Request, max_bytes: int, held: Held | None = None) -> tuple[bytes, str]:
    """The uploaded file's bytes and name, from a multipart ``file`` field or the raw body."""
    multipart = request.headers.get("content-type", "").lower().startswith("multipart/form-data")
    body = await read_body(request, max_bytes, MULTIPART_ALLOWANCE if multipart else 0, held)
    data, name = await multipart_file(request, body) if multipart else (body, "upload")
    if len(data) > max_bytes:
        raise too_large(max_bytes)
    if not data:
        raise ApiError(400, "empty upload: send the image as the body or as a multipart field named 'file'")
    if sniff(data) is None:
        raise ApiError(415, f"not an image of a supported type ({ACCEPTED}), judged by its first bytes")
    return data, name


async def read_body(request: Request, max_bytes: int, allowance: int = 0, held: Held | None = None) -> bytes:
    """The body, refused once it is known to exceed ``max_bytes + allowance``: never buffered unbounded.

    ``held`` counts the bytes against the server-wide budget as they arrive."""
    limit = max_bytes + allowance
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large(max_bytes)
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a chunked body, or one longer than it said
                raise too_large(max_bytes)
            if held is not None:
                held.take(len(chunk))
            chunks.append(chunk)
    except ClientDisconnect:
        raise ApiError(400, "client disconnected before the body was complete") from None
    return b"".join(chunks)


async def multipart_file(request: Request, body: bytes) -> tuple[bytes, str]:
    """Parse the already bounded body as a form and return its ``file`` field."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form(max_files=1, max_fields=16, max_part_size=64 * 1024)
    except (MultiPartException, StarletteHTTPException, ClientDisconnect) as exc:
        detail = getattr(exc, "detail", None) or getattr(exc, "message", None) or "cannot be parsed"
        raise ApiError(400, f"malformed multipart body: {detail}") from None
    try:
        upload = form.get("file")
        if isinstance(upload, str):  # curl -F file=text, not -F file=@path
            raise ApiError(400, "the multipart field 'file' holds text, not a file (curl: -F file=@PATH)")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "the multipart body has no file field named 'file'")
        return await upload.read(), (upload.filename or "upload")[:MAX_FILENAME]
    finally:
        await form.close()


def sniff(data: bytes) -> str | None:
    """The image format named by the first bytes, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return next((fmt for magic, fmt in MAGIC if data.startswith(magic)), None)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"upload is over the limit of {limit / MB:g} MB")


def add_error_handlers(app: FastAPI) -> None:
    """Every error leaves as JSON with an ``error`` string, whatever raised it."""

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"error": f"invalid request: {problems}"}, status_code=400)

    @app.exception_handler(Exception)
    async def internal_error(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return JSONResponse({"error": "internal server error"}, status_code=500)


class ObserveMiddleware:
    """Counts and times every HTTP request, and adds the security headers to every response."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_observed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            self.metrics.record_request(route_label(scope["path"]), scope["method"], status,
                                        time.perf_counter() - start)


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    return "/static" if path.startswith("/static/") else "other"
