from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from agegender import __version__
from agegender.data.align import DEFAULT_FACE_CROP
from agegender.serving.app import create_app

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def client(tiny_predictor) -> TestClient:
    return TestClient(create_app(tiny_predictor, max_upload_bytes=1024 * 1024), raise_server_exceptions=False)


def _upload(client: TestClient, data: bytes, name: str = "photo.jpg", content_type: str = "image/jpeg"):
    return client.post("/predict", files={"file": (name, data, content_type)})


def test_health_page_and_docs(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["image_size"] == 32 and health["runtime"] == "onnx"  # the default
    assert health["crop"] == DEFAULT_FACE_CROP.to_dict()  # the checkpoint's, as prediction uses it
    page = client.get("/")
    assert page.status_code == 200 and "getUserMedia" in page.text and "<canvas" in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: the page works offline
    assert "/predict" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn." not in docs.text  # Swagger UI from the package, not a CDN
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200


def test_predict_returns_boxed_faces(client):
    response = _upload(client, (EXAMPLES / "astronaut.jpg").read_bytes())
    assert response.status_code == 200
    body = response.json()
    assert (body["width"], body["height"]) == (512, 512)
    assert len(body["faces"]) == 1
    face = body["faces"][0]
    x1, y1, x2, y2 = face["box"]
    assert 140 < (x1 + x2) / 2 < 300 and 40 < (y1 + y2) / 2 < 200
    assert 0 <= face["p_female"] <= 1 and face["gender"] in ("female", "male") and 0 <= face["age"] <= 116


def test_image_without_faces_is_valid(client):
    buffer = io.BytesIO()
    Image.fromarray(np.full((240, 320, 3), 128, np.uint8)).save(buffer, "PNG")
    response = _upload(client, buffer.getvalue(), "blank.png", "image/png")
    assert response.status_code == 200 and response.json()["faces"] == []


def test_awkward_uploads_get_clear_answers_never_500(client, awkward_images):
    for name, (data, decodable) in awkward_images.items():
        response = _upload(client, data, name)
        if decodable:
            assert response.status_code == 200, (name, response.text)
        else:
            assert response.status_code in (415, 422), (name, response.text)
            assert name in response.json()["detail"] or response.status_code == 422, name
    assert _upload(client, b"plain text", "notes.txt", "text/plain").status_code == 415
    huge = _upload(client, awkward_images["huge.png"][0], "huge.png")
    assert "too large" in huge.json()["detail"]


def test_oversized_bodies_are_rejected_with_413(client):
    big = b"\xff\xd8" + b"\0" * (2 * 1024 * 1024)
    assert _upload(client, big).status_code == 413
    # Chunked upload: no Content-Length, so the limit is enforced while the body streams in.
    body = b"--x\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n\r\n" + big + b"\r\n--x--\r\n"
    chunks = (body[i : i + 65536] for i in range(0, len(body), 65536))
    response = client.post("/predict", content=chunks, headers={"content-type": "multipart/form-data; boundary=x"})
    assert response.status_code == 413


def test_missing_file_field_is_422(client):
    assert client.post("/predict").status_code == 422


def test_cli_serve_builds_the_app_and_runs_uvicorn(monkeypatch, capsys, tiny_checkpoint):
    import sys

    import uvicorn
    from fastapi import FastAPI

    from agegender.cli import main

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: calls.append((app, options)))
    monkeypatch.setattr(sys, "argv", ["agegender", "serve", "--model", str(tiny_checkpoint), "--port", "8123",
                                      "--read-timeout", "3", "--max-connections", "7"])
    main()
    (app, options), = calls
    protocol = options.pop("http")
    assert isinstance(app, FastAPI) and options == {"host": "127.0.0.1", "port": 8123, "timeout_keep_alive": 5}
    assert (protocol.limits.header_timeout, protocol.limits.body_idle_timeout, protocol.limits.max_connections) == (3, 3, 7)
    health = TestClient(app).get("/health").json()
    assert health["model"] == tiny_checkpoint.stem and str(tiny_checkpoint.parent) not in str(health)  # no server path
    assert health["model_version"] == __version__
    assert health["model_sha256"] == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()[:16]


def test_concurrent_requests_each_get_their_own_answer(client):
    """Eight uploads in flight at once: every answer matches the same image sent alone."""
    from concurrent.futures import ThreadPoolExecutor

    photos = {
        "astronaut": (EXAMPLES / "astronaut.jpg").read_bytes(),
        "face": (EXAMPLES / "astronaut_face.jpg").read_bytes(),
    }
    alone = {name: _upload(client, data).json() for name, data in photos.items()}
    names = ["astronaut", "face"] * 4
    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(lambda name: (name, _upload(client, photos[name])), names))
    for name, response in answers:
        assert response.status_code == 200
        body = response.json()
        assert (body["width"], body["height"]) == (alone[name]["width"], alone[name]["height"])
        assert [f["box"] for f in body["faces"]] == [f["box"] for f in alone[name]["faces"]]
        assert [round(f["age"], 3) for f in body["faces"]] == [round(f["age"], 3) for f in alone[name]["faces"]]


def test_huge_dimension_png_is_refused_without_decoding(client, awkward_images):
    """7000x7000 claimed by a file of a few hundred bytes: 422 from the header (no pixel data exists)."""
    from tests.serving.conftest import _png_claiming

    response = _upload(client, _png_claiming(7000, 7000), "huge.png", "image/png")
    assert response.status_code == 422
    assert "huge.png: image too large: 7000x7000 pixels" in response.json()["detail"]


def test_large_photo_is_shrunk_and_boxes_come_back_in_its_pixels(tiny_predictor):
    """The same photo at 2x, on an app that shrinks to 512 px: same face, box doubled."""
    small = TestClient(create_app(tiny_predictor)).post(
        "/predict", files={"file": ("a.jpg", (EXAMPLES / "astronaut.jpg").read_bytes())}
    ).json()
    big_photo = Image.open(EXAMPLES / "astronaut.jpg").resize((1024, 1024), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    big_photo.save(buffer, "PNG")
    big = TestClient(create_app(tiny_predictor, max_side=512)).post(
        "/predict", files={"file": ("big.png", buffer.getvalue())}
    ).json()
    assert (big["width"], big["height"]) == (1024, 1024)
    assert len(big["faces"]) == len(small["faces"]) == 1
    doubled = [2 * v for v in small["faces"][0]["box"]]
    assert max(abs(a - b) for a, b in zip(big["faces"][0]["box"], doubled)) <= 12  # a few pixels of 512


@pytest.mark.parametrize("max_concurrent", [1, 2])
def test_concurrent_decodes_and_inferences_are_capped(tiny_predictor, monkeypatch, max_concurrent):
    """Eight uploads at once: never more than max_concurrent decode-and-predict at the same time."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from agegender.serving import app as app_module

    running, peak, count_lock = [0], [0], threading.Lock()
    real_decode = app_module.decode_rgb_bytes_bounded

    def slow_counted_decode(*args, **kwargs):
        with count_lock:
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.1)  # long enough for every request to arrive while the first ones run
        try:
            return real_decode(*args, **kwargs)
        finally:
            with count_lock:
                running[0] -= 1

    monkeypatch.setattr(app_module, "decode_rgb_bytes_bounded", slow_counted_decode)
    capped = TestClient(create_app(tiny_predictor, max_concurrent=max_concurrent))
    photo = (EXAMPLES / "astronaut_face.jpg").read_bytes()
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(pool.map(lambda _: _upload(capped, photo).status_code, range(8)))
    assert codes == [200] * 8
    assert peak[0] == max_concurrent


def test_pool_calls_on_idle_once_after_a_burst():
    import asyncio
    import threading

    from agegender.serving.app import InferencePool

    idle_calls = []
    release = threading.Event()
    pool = InferencePool(1, on_idle=lambda: idle_calls.append(1))

    async def burst():
        jobs = [asyncio.ensure_future(pool.run(release.wait, 5)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert idle_calls == []  # three jobs queued or running: not idle yet
        release.set()
        return await asyncio.gather(*jobs)

    assert asyncio.run(burst()) == [True, True, True]
    assert idle_calls == [1]


def test_a_form_with_two_file_parts_is_a_422(client):
    image = (EXAMPLES / "astronaut.jpg").read_bytes()
    answer = client.post("/predict", files=[("file", ("a.jpg", image)), ("file", ("b.jpg", image))])
    assert answer.status_code == 422 and "one image per request" in answer.json()["detail"]


def test_serve_on_a_busy_port_is_one_error_line(run_cli, tiny_checkpoint):
    import socket

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code, _, err = run_cli("serve", "--model", tiny_checkpoint, "--port", str(port))
    assert code == 2
    assert f"error: cannot listen on 127.0.0.1:{port}" in err
