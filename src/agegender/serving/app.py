"""The FastAPI app: POST /predict (multipart image -> faces as JSON), GET /health, GET / (web page),
GET /docs (OpenAPI, served without a CDN).

Bad uploads never cause a 500: bodies over the limit get 413 (checked against Content-Length
and again while the body streams in, for chunked uploads), files that are not images 415,
images that cannot be decoded (truncated, corrupt, too many pixels) 422. Decoding goes through
data.images.decode_rgb_bytes, the same rules as every other entry point.
"""

from __future__ import annotations

import threading
import time
from importlib import resources

from fastapi import FastAPI, File, HTTPException, UploadFile
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel

from agegender import __version__
from agegender.data.images import ImageLoadError, decode_rgb_bytes
from agegender.inference.predictor import Predictor

MAX_UPLOAD_BYTES = 10 * 1024 * 1024


class FaceOut(BaseModel):
    box: tuple[int, int, int, int] | None  # x1, y1, x2, y2 in pixels of the uploaded image
    score: float | None
    age: float
    gender: str
    p_female: float


class PredictOut(BaseModel):
    source: str
    width: int
    height: int
    faces: list[FaceOut]
    seconds: float


class HealthOut(BaseModel):
    status: str
    version: str
    model: str
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


def create_app(predictor: Predictor, *, max_upload_bytes: int = MAX_UPLOAD_BYTES) -> FastAPI:
    # FastAPIOffline: FastAPI whose /docs and /redoc pages load Swagger UI / ReDoc from files in the
    # wheel instead of a CDN, so the docs work on machines without internet access.
    app = FastAPIOffline(
        title="agegender",
        version=__version__,
        description="Age and gender of every face in an uploaded photo. The web page is at /.",
    )
    app.add_middleware(BodySizeLimit, max_bytes=max_upload_bytes)
    lock = threading.Lock()  # one prediction at a time: detectors keep state, and the CPU is the limit anyway

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def page() -> str:
        return resources.files("agegender.serving").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/health", response_model=HealthOut)
    def health() -> HealthOut:
        return HealthOut(
            status="ok", version=__version__, model=str(predictor.source), runtime=predictor.runtime,
            image_size=predictor.image_size, detector=predictor.detector.name, crop=predictor.face_crop.to_dict(),
        )  # fmt: skip

    @app.post(
        "/predict",
        response_model=PredictOut,
        responses={413: {"description": "upload too large"}, 415: {"description": "not an image"},
                   422: {"description": "image cannot be decoded"}},
    )  # fmt: skip
    def predict(file: UploadFile = File(..., description="an image file (JPEG, PNG, WebP, BMP, TIFF)")) -> PredictOut:
        data = file.file.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"upload larger than {max_upload_bytes // (1024 * 1024)} MB")
        name = file.filename or "upload"
        try:
            rgb = decode_rgb_bytes(data, name=name)
        except ImageLoadError as error:
            status = 415 if error.reason.startswith("not an image") else 422
            raise HTTPException(status, f"cannot read {name}: {error.reason}") from error
        start = time.perf_counter()
        with lock:
            prediction = predictor.predict(rgb, source=name)
        faces = [
            FaceOut(
                box=None if f.box is None else (f.box.x1, f.box.y1, f.box.x2, f.box.y2),
                score=f.score, age=f.age, gender=f.gender, p_female=f.p_female,
            )  # fmt: skip
            for f in prediction.faces
        ]
        return PredictOut(
            source=name, width=rgb.shape[1], height=rgb.shape[0], faces=faces, seconds=time.perf_counter() - start
        )

    return app


def run_server(predictor: Predictor, host: str = "127.0.0.1", port: int = 8000) -> None:
    import uvicorn

    uvicorn.run(create_app(predictor), host=host, port=port)
