"""uvicorn's HTTP/1.1 protocol with read deadlines and a connection cap: stalled clients are shed.

uvicorn (0.54) times out only idle keep-alive connections, after a response: a client that opens
a connection and sends half a request line, or headers without the body they announce, holds a
file descriptor and a request task forever (1,500 such clients held 1,509 descriptors). This
subclass of its h11 protocol adds, per connection:

* a **header deadline**: a request's headers must be complete `header_timeout` seconds after the
  connection opened, or after the previous response, however slowly they trickle in;
* a **body deadline**: once the headers are in, the body must keep coming: no gap longer than
  `body_idle_timeout`, and all of it within `body_timeout`;
* a **connection cap**: a connection beyond `max_connections` open ones is answered 503 and closed
  at once, before it can hold anything.

A client that misses a deadline mid-request gets 408 and is closed; one that sent nothing since its
last response is closed silently, as uvicorn's keep-alive timeout does. Time spent waiting for a
worker or running the model never counts: only time the server waits for the client's bytes.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds from connection (or last response) to complete headers
    body_idle_timeout: float = 10.0  # longest gap between two pieces of a request body
    body_timeout: float = 120.0  # a whole body (10 MB at about 0.7 Mbit/s)
    max_connections: int = 1000  # open connections; stalled ones are shed by the deadlines above

    def __post_init__(self):
        for name in ("header_timeout", "body_idle_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.max_connections < 1:
            raise ValueError(f"max_connections must be >= 1, got {self.max_connections}")


def _raw_response(status: str) -> bytes:
    return f"HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".encode("ascii")


REQUEST_TIMEOUT = _raw_response("408 Request Timeout")
SERVICE_UNAVAILABLE = _raw_response("503 Service Unavailable")


class SheddingH11Protocol(H11Protocol):
    """H11Protocol that closes connections whose client stalls (see the module docstring)."""

    limits = ConnectionLimits()
    shed = {"stalled": 0, "over_cap": 0}  # counts, per server process (read by tests and the benchmark)
    _watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_waiting_for_headers()
        if len(self.connections) > self.limits.max_connections:
            type(self).shed["over_cap"] += 1
            transport.write(SERVICE_UNAVAILABLE)
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_watchdog()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_bytes_at = time.monotonic()
        self._bytes_since_response += len(data)
        cycle = self.cycle
        super().data_received(data)
        if self.cycle is not cycle:  # these bytes completed a request's headers: its body's clock starts
            self._body_started_at = self._last_bytes_at
            self._arm(min(self.limits.body_idle_timeout, self.limits.body_timeout))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_waiting_for_headers()

    # the watchdog

    def _start_waiting_for_headers(self) -> None:
        self._phase_started_at = self._last_bytes_at = self._body_started_at = time.monotonic()
        self._bytes_since_response = 0
        self._arm(self.limits.header_timeout)

    def _arm(self, delay: float) -> None:
        self._stop_watchdog()
        self._watchdog = self.loop.call_later(max(delay, 0.0), self._check_deadlines)

    def _stop_watchdog(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None

    def _reading_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and not cycle.response_complete and cycle.more_body and not cycle.response_started

    def _waiting_for_headers(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _check_deadlines(self) -> None:
        self._watchdog = None
        if self.transport.is_closing():
            return
        now = time.monotonic()
        if self._waiting_for_headers():
            left = self._phase_started_at + self.limits.header_timeout - now
        elif self._reading_body() and not self.flow.read_paused:
            left = min(self._last_bytes_at + self.limits.body_idle_timeout,
                       self._body_started_at + self.limits.body_timeout) - now  # fmt: skip
        else:  # the app has the whole request, or has not taken the body read so far: the server's wait, not the client's
            self._last_bytes_at = now
            self._arm(self.limits.body_idle_timeout)
            return
        if left > 0:
            self._arm(left)
        else:
            self._shed()

    def _shed(self) -> None:
        type(self).shed["stalled"] += 1
        started = self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started
        if self._bytes_since_response and not started:
            self.transport.write(REQUEST_TIMEOUT)
        self.transport.close()


def shedding_protocol(limits: ConnectionLimits) -> type[SheddingH11Protocol]:
    """A protocol class for uvicorn's `http=` with these limits and its own shed counts."""
    return type("SheddingH11Protocol", (SheddingH11Protocol,), {"limits": limits, "shed": {"stalled": 0, "over_cap": 0}})
