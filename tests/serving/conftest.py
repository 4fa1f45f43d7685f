"""Fixtures for the serving tests: a tiny checkpoint's Predictor, the awkward uploads, a live server."""

from __future__ import annotations

import contextlib
import io
import socket
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.inference.predictor import Predictor
from agegender.serving.protocol import ConnectionLimits, shedding_protocol

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="session")
def tiny_predictor(tiny_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint)


def _encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (with almost no data behind it)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def awkward_images() -> dict[str, tuple[bytes, bool]]:
    """name -> (file bytes, whether it should decode)."""
    face = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB").resize((128, 128))
    good_jpeg = _encode(face, "JPEG")
    gray16 = Image.fromarray(np.asarray(face.convert("L"), np.uint16) * 257)  # mode I;16
    return {
        "corrupt.jpg": (b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4, False),
        "truncated.jpg": (good_jpeg[: len(good_jpeg) // 2], False),
        "empty.jpg": (b"", False),
        "text.jpg": (b"this is not an image\n" * 10, False),
        "huge.png": (_png_claiming(12000, 12000), False),
        "cmyk.jpg": (_encode(face.convert("CMYK"), "JPEG"), True),
        "gray16.png": (_encode(gray16, "PNG"), True),
        "alpha.png": (_encode(face.convert("RGBA"), "PNG"), True),
        "gray.jpg": (_encode(face.convert("L"), "JPEG"), True),
    }


@contextlib.contextmanager
def live_server(app, limits: ConnectionLimits = ConnectionLimits()):
    """(port, protocol class) of uvicorn serving `app` on a free local port in a thread, as `serve` runs it."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    protocol = shedding_protocol(limits)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=protocol))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        yield port, protocol
    finally:
        server.should_exit = True
        thread.join(10)
