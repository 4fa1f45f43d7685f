"""The server sheds stalled clients (read deadlines, a connection cap) and still serves everyone else."""

from __future__ import annotations

import asyncio
import socket
import time

import httpx
import pytest

from agegender.serving.app import create_app
from agegender.serving.protocol import ConnectionLimits
from tests.serving.conftest import EXAMPLES, live_server

QUICK = ConnectionLimits(header_timeout=0.6, body_idle_timeout=0.6, body_timeout=3.0, max_connections=50)
REQUEST_HEAD = b"POST /slow HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n"


async def slow_app(scope, receive, send):
    """Reads the whole body, then takes longer than every read deadline to answer."""
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await asyncio.sleep(1.5 if scope["path"] == "/slow" else 0)
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=10)


def read_one_response(client: socket.socket) -> bytes:
    """One whole response of a kept-alive connection: TCP may hand its head and body over separately."""
    received = b""
    while b"\r\n\r\n" not in received:
        received += client.recv(4096)
    head, body = received.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        body += client.recv(4096)
    return head + b"\r\n\r\n" + body


def read_until_closed(client: socket.socket) -> tuple[bytes, float]:
    """Everything the server sends until it closes, and the seconds that took."""
    start, received = time.monotonic(), b""
    while chunk := client.recv(4096):
        received += chunk
    return received, time.monotonic() - start


@pytest.fixture(scope="module")
def slow_server():
    with live_server(slow_app, QUICK) as server:
        yield server


def test_a_connection_that_sends_nothing_is_closed_after_the_header_deadline(slow_server):
    port, _ = slow_server
    with connect(port) as client:
        received, seconds = read_until_closed(client)
    assert received == b"" and 0.4 < seconds < 2.0


def test_headers_trickled_in_slowly_still_meet_one_deadline(slow_server):
    port, _ = slow_server
    with connect(port) as client:
        start = time.monotonic()
        for byte in REQUEST_HEAD[:20]:  # one byte every 0.1 s: never idle for long, never complete
            try:
                client.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.1)
        received, _ = read_until_closed(client)
    assert received.startswith(b"HTTP/1.1 408") and time.monotonic() - start < 2.5


def test_a_body_that_stops_coming_gets_408(slow_server):
    port, protocol = slow_server
    stalled_before = protocol.shed["stalled"]
    with connect(port) as client:
        client.sendall(REQUEST_HEAD + b"x" * 10)  # 990 bytes short
        received, seconds = read_until_closed(client)
    assert received.startswith(b"HTTP/1.1 408") and seconds < 2.0
    assert protocol.shed["stalled"] == stalled_before + 1


def test_a_body_dripping_too_slowly_meets_the_whole_body_deadline(slow_server):
    port, _ = slow_server
    with connect(port) as client:
        client.sendall(REQUEST_HEAD)
        start = time.monotonic()
        received = b""
        for _ in range(100):  # 1 byte per 0.3 s: within the idle deadline, far beyond the body deadline
            try:
                client.sendall(b"x")
            except OSError:
                break
            client.settimeout(0.3)
            try:
                received += client.recv(4096)
            except TimeoutError:
                continue
            if received:
                break
    assert received.startswith(b"HTTP/1.1 408") and 2.5 < time.monotonic() - start < 5.0


def test_time_the_app_takes_never_counts_against_the_client(slow_server):
    port, _ = slow_server
    response = httpx.post(f"http://127.0.0.1:{port}/slow", content=b"x" * 1000, timeout=10)
    assert response.status_code == 200 and response.text == "ok"


def test_a_keep_alive_connection_that_stalls_in_its_second_request_is_shed(slow_server):
    port, _ = slow_server
    with connect(port) as client:
        client.sendall(b"GET /fast HTTP/1.1\r\nhost: x\r\n\r\n")
        first = read_one_response(client)
        client.sendall(b"GET /fast HTTP/1.1\r\nhost:")  # the second request's headers never end
        received, seconds = read_until_closed(client)
    assert first.startswith(b"HTTP/1.1 200") and received.startswith(b"HTTP/1.1 408") and seconds < 2.0


def test_connections_over_the_cap_get_503_and_the_rest_are_served():
    limits = ConnectionLimits(header_timeout=5, body_idle_timeout=5, max_connections=3)
    with live_server(slow_app, limits) as (port, protocol):
        held = [connect(port) for _ in range(3)]
        time.sleep(0.2)
        with connect(port) as extra:
            received, _ = read_until_closed(extra)
        assert received.startswith(b"HTTP/1.1 503") and protocol.shed["over_cap"] == 1
        for client in held:
            client.close()
        time.sleep(0.2)  # the server sees them go
        assert httpx.get(f"http://127.0.0.1:{port}/fast", timeout=5).status_code == 200


def test_the_app_answers_predictions_while_stalled_clients_are_held(tiny_predictor):
    photo = (EXAMPLES / "astronaut.jpg").read_bytes()
    with live_server(create_app(tiny_predictor), QUICK) as (port, protocol):
        stalled = [connect(port) for _ in range(20)]
        for client in stalled[:10]:
            client.sendall(REQUEST_HEAD)  # half of them mid-request
        response = httpx.post(f"http://127.0.0.1:{port}/predict", files={"file": ("a.jpg", photo)}, timeout=30)
        assert response.status_code == 200 and response.json()["faces"]
        for client in stalled:
            read_until_closed(client)
            client.close()
        assert protocol.shed["stalled"] == 20
