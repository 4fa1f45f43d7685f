"""The FastAPI app: POST /predict (multipart image -> faces as JSON), GET /health, GET / (web page),
GET /docs (OpenAPI, served without a CDN).

Bad uploads never cause a 500: bodies over the limit get 413 (checked against Content-Length
and again while the body streams in, for chunked uploads), files that are not images 415,
images that cannot be decoded (truncated, corrupt, too many pixels) 422. Decoding goes through
data.images.decode_rgb_bytes_bounded, the same rules as every other entry point.

Memory is bounded per request and in total (benchmarks/bench_server_memory.py measures it):

* Each upload is decoded at most MAX_SIDE pixels per side (JPEGs are scaled down by the decoder
  itself, other formats right after decoding) and refused (422) when decoding alone would need
  more than MAX_DECODE_PIXELS pixels. Face boxes are mapped back to the uploaded image's pixels.
* At most `max_concurrent` requests read, decode and predict at once, on a pool of that many
  threads of the app's own; the others wait as coroutines holding only their upload, which
  Starlette spools to disk past 1 MB.
  Measured, the pool is what bounds the peak: on Starlette's 40-thread pool every thread took
  turns decoding and glibc kept a malloc arena per thread (peak 1.09 GB instead of 0.66 GB).
* When the last request of a burst finishes, glibc's malloc_trim hands freed heap pages back to
  the OS (measured: 40 MB less held after bursts of 4000x4000 images; a no-op without glibc).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import socket
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from importlib import resources
from typing import Callable, TypeVar

from fastapi import FastAPI, File, HTTPException, Request, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from agegender import __version__
from agegender.data.images import DecodedImage, ImageLoadError, decode_rgb_bytes_bounded
from agegender.errors import UserInputError
from agegender.inference.predictor import Predictor
from agegender.inference.streams.frames import Frame
from agegender.models.checkpoint import file_sha256, model_name
from agegender.serving.protocol import ConnectionLimits, shedding_protocol

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# The longer side the detector sees. Haar finds faces of >= 40 px of what it sees and the models
# take 160 px crops, so shrinking a 4000 px photo to 2048 px loses only faces under ~80 px.
MAX_SIDE = 2048
# Pixels one decode may allocate: 4096 x 4096 (a 16 Mpx camera photo; 64 MB as Pillow RGBA). JPEGs
# count at the scale their decoder shrinks them to, so a 7000x7000 JPEG passes and a PNG does not.
MAX_DECODE_PIXELS = 4096 * 4096
MAX_CONCURRENT = 2  # requests decoding or predicting at once; the CPU is the limit beyond that

T = TypeVar("T")


class FaceOut(BaseModel):
    box: tuple[int, int, int, int] | None  # x1, y1, x2, y2 in pixels of the uploaded image
    score: float | None
    age: float
    gender: str
    p_female: float


class PredictOut(BaseModel):
    source: str
    width: int  # of the uploaded image; faces were found on a copy shrunk to at most MAX_SIDE per side
    height: int
    faces: list[FaceOut]
    seconds: float


class HealthOut(BaseModel):
    status: str
    version: str
    model: str  # the model's name (its card's, else the file's stem), never its path on the server
    model_version: str  # the package version that wrote the model file
    model_sha256: str  # the first 16 hex digits of the file's SHA-256: which weights answer
    runtime: str
    image_size: int
    detector: str
    crop: dict  # how faces are cut from uploads: method, template, margin (data.align.FaceCropSpec)


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over `max_bytes`, before they are buffered."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(413, f"upload larger than {self.max_bytes // (1024 * 1024)} MB")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            error = self._too_large()
            return await JSONResponse({"detail": error.detail}, error.status_code)(scope, receive, send)
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()  # FastAPI re-raises HTTPExceptions from body parsing as-is
            return message

        await self.app(scope, limited_receive, send)


def _load_malloc_trim() -> Callable[[], None]:
    """glibc's malloc_trim(0), or a no-op where the C library is not glibc (musl, macOS)."""
    try:
        trim = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return lambda: None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return lambda: trim(0)


class InferencePool:
    """Runs jobs on `workers` threads of its own; `on_idle` after the last job of a burst.

    Requests waiting for a worker are coroutines, not threads: only `workers` threads ever decode
    or run the model, so only they keep malloc arenas and per-thread state. A burst ends when no
    job is queued or running; `on_idle` then runs once, on the worker that finished last.
    """

    def __init__(self, workers: int, on_idle: Callable[[], None]):
        if workers < 1:
            raise ValueError(f"max_concurrent must be >= 1, got {workers}")
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="agegender-predict")
        self._count_lock = threading.Lock()
        self._pending = 0
        self._on_idle = on_idle

    async def run(self, job: Callable[..., T], *args) -> T:
        with self._count_lock:
            self._pending += 1
        future = self._executor.submit(job, *args)
        future.add_done_callback(self._finished)  # also when cancelled by a client that went away
        return await asyncio.wrap_future(future)

    def _finished(self, _future: Future) -> None:
        with self._count_lock:
            self._pending -= 1
            idle = self._pending == 0
        if idle:
            self._on_idle()


def _decode_upload(data: bytes, name: str, max_side: int, max_decode_pixels: int) -> DecodedImage:
    try:
        return decode_rgb_bytes_bounded(data, name=name, max_side=max_side, max_pixels=max_decode_pixels)
    except ImageLoadError as error:
        status = 415 if error.reason.startswith("not an image") else 422
        hint = "; shrink it before uploading" if error.reason.startswith("image too large") else ""
        raise HTTPException(status, f"cannot read {name}: {error.reason}{hint}") from error


def _predict_upload(
    predictor: Predictor,
    lock: threading.Lock,
    upload: UploadFile,
    *,
    max_upload_bytes: int,
    max_side: int,
    max_decode_pixels: int,
) -> PredictOut:
    """Read, decode and predict one upload (on a pool worker: the body is read only here)."""
    name = upload.filename or "upload"
    data = upload.file.read(max_upload_bytes + 1)
    if len(data) > max_upload_bytes:
        raise HTTPException(413, f"upload larger than {max_upload_bytes // (1024 * 1024)} MB")
    decoded = _decode_upload(data, name, max_side, max_decode_pixels)
    del data
    start = time.perf_counter()
    with lock:
        prediction = predictor.predict(Frame(decoded.rgb, name, 0))
    width, height = decoded.original_size
    prediction = prediction.scaled(*decoded.scale, width, height)  # boxes in pixels of the upload
    seconds = time.perf_counter() - start
    return PredictOut(**prediction.to_dict(), width=width, height=height, seconds=seconds)


def create_app(
    predictor: Predictor,
    *,
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_side: int = MAX_SIDE,
    max_decode_pixels: int = MAX_DECODE_PIXELS,
    max_concurrent: int = MAX_CONCURRENT,
) -> FastAPI:
    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI / ReDoc from files in the
    # wheel instead of a CDN, so the docs work on machines without internet access.
    app = FastAPIOffline(
        title="agegender",
        version=__version__,
        description="Age and gender of every face in an uploaded photo. The web page is at /.",
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes)
    lock = threading.Lock()  # one prediction at a time: detectors keep state, and the CPU is the limit anyway
    pool = InferencePool(max_concurrent, on_idle=_load_malloc_trim())

    predict_upload = functools.partial(
        _predict_upload, predictor, lock, max_upload_bytes=max_upload_bytes, max_side=max_side,
        max_decode_pixels=max_decode_pixels,
    )  # fmt: skip

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("agegender.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    digest = file_sha256(predictor.model.source)[:16]
    name = model_name(predictor.model.info.meta, predictor.model.source)

    @app.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        return HealthOut(
            status="ok", version=__version__, model=name, model_version=str(predictor.model.info.meta.get("package_version")),
            model_sha256=digest, runtime=predictor.model.runtime,
            image_size=predictor.model.image_size, detector=predictor.detector.name, crop=predictor.model.face_crop.to_dict(),
        )  # fmt: skip

    @app.post(
        "/predict",
        response_model=PredictOut,
        responses={413: {"description": "upload too large"}, 415: {"description": "not an image"},
                   422: {"description": "image cannot be decoded"}},
    )  # fmt: skip
    async def predict(
        request: Request,
        file: UploadFile = File(..., description="an image file (JPEG, PNG, WebP, BMP, TIFF)"),
    ) -> PredictOut:
        if len((await request.form()).getlist("file")) > 1:  # the form FastAPI parsed, cached: no second read
            raise HTTPException(422, "send one image per request: the form has several 'file' parts")
        return await pool.run(predict_upload, file)

    return app


def run_server(
    predictor: Predictor,
    host: str = "127.0.0.1",
    port: int = 8000,
    max_concurrent: int = MAX_CONCURRENT,
    limits: ConnectionLimits = ConnectionLimits(),
) -> None:
    import uvicorn

    check_can_listen(host, port)
    allow_open_files(limits.max_connections + SPARE_FILES)
    uvicorn.run(
        create_app(predictor, max_concurrent=max_concurrent), host=host, port=port,
        http=shedding_protocol(limits), timeout_keep_alive=KEEP_ALIVE_S,
    )  # fmt: skip


SPARE_FILES = 64  # descriptors beyond the connections: the model, spooled uploads, the listening socket
KEEP_ALIVE_S = 5  # uvicorn's default, stated: an idle keep-alive connection closes after it


def allow_open_files(needed: int) -> None:
    """Raise the soft limit on open files towards `needed` (many systems start at 1024), up to the hard one."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


class ServeError(UserInputError):
    """The server cannot start as asked (a busy port, an unknown host)."""


def check_can_listen(host: str, port: int) -> None:
    """Bind once before the app starts: a busy port or a bad host is one error line, not uvicorn's exit 3."""
    try:
        socket.create_server((host, port)).close()
    except OSError as error:
        raise ServeError(f"cannot listen on {host}:{port} ({error.strerror or error}); is another server there?") from None
