from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

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
    assert health["status"] == "ok" and health["image_size"] == 32 and health["runtime"] == "torch"
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
    monkeypatch.setattr(sys, "argv", ["agegender", "serve", "--model", str(tiny_checkpoint), "--port", "8123"])
    main()
    (app, options), = calls
    assert isinstance(app, FastAPI) and options == {"host": "127.0.0.1", "port": 8123}
    assert TestClient(app).get("/health").json()["model"] == str(tiny_checkpoint)


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
