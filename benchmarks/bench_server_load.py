"""The real server under load while stalled clients hold connections: codes, latency, memory, shedding.

    python benchmarks/bench_server_load.py [--model PATH] [--n 200] [--stalled 500] [--read-timeout 10]
        [--photo examples/astronaut_face.jpg] [--json docs/results/server_load.json]

Starts `agegender serve` (the bundled model unless --model) as a subprocess and sends, after one
warm-up request:

1. `--n` concurrent POST /predict of one photo, nothing else open: the unloaded latencies;
2. `--stalled` connections that stall (half send nothing, half send their headers and 10 bytes of a
   1 MB body), then the same `--n` concurrent requests while they are held.

Printed per phase: status codes, p50/p95 latency, the server's peak RSS; then how long the server
took to close the stalled connections (it must within --read-timeout) and what they were sent.
The client runs in this process; time it alone (nothing else on the cores).
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from bench_server_memory import EXAMPLES, RssSampler, read_status_kb, start_server, wait_healthy  # same folder

STALLED_HEAD = b"POST /predict HTTP/1.1\r\nhost: x\r\ncontent-type: multipart/form-data; boundary=b\r\ncontent-length: 1000000\r\n\r\n"


def timed_burst(base: str, photo: bytes, n: int) -> tuple[Counter, np.ndarray]:
    def send(_: int) -> tuple[object, float]:
        start = time.perf_counter()
        try:
            code = httpx.post(f"{base}/predict", files={"file": ("photo.jpg", photo)}, timeout=600).status_code
        except httpx.HTTPError as error:
            code = f"error {type(error).__name__}"
        return code, time.perf_counter() - start

    with ThreadPoolExecutor(max_workers=n) as pool:
        results = list(pool.map(send, range(n)))
    return Counter(code for code, _ in results), np.array([s for _, s in results])


def open_stalled(port: int, n: int) -> list[socket.socket]:
    clients = []
    for i in range(n):
        client = socket.create_connection(("127.0.0.1", port))
        if i % 2:
            client.sendall(STALLED_HEAD + b"--b\r\nxx")
        client.setblocking(False)
        clients.append(client)
    return clients


def wait_closed(clients: list[socket.socket], opened_at: float, limit_s: float) -> tuple[list[float], Counter]:
    """Seconds from opening until the server closed each stalled connection, and the status lines it sent."""
    selector = selectors.DefaultSelector()
    for client in clients:
        selector.register(client, selectors.EVENT_READ, b"")
    closed_after, answers, received = [], Counter(), {}
    deadline = time.monotonic() + limit_s
    while selector.get_map() and time.monotonic() < deadline:
        for key, _ in selector.select(timeout=0.5):
            try:
                chunk = key.fileobj.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                chunk = b""
            if chunk:
                received[key.fileobj] = received.get(key.fileobj, b"") + chunk
                continue
            closed_after.append(time.monotonic() - opened_at)
            answers[(received.get(key.fileobj, b"").split(b"\r\n", 1)[0] or b"(closed silently)").decode()] += 1
            selector.unregister(key.fileobj)
            key.fileobj.close()
    answers["still open"] = len(selector.get_map())
    return closed_after, answers


def phase_row(name: str, codes: Counter, seconds: np.ndarray, peak_kb: int) -> dict:
    row = {"phase": name, "codes": {str(k): v for k, v in codes.items()}, "p50_s": float(np.percentile(seconds, 50)),
           "p95_s": float(np.percentile(seconds, 95)), "peak_rss_mb": peak_kb / 1024}
    print(f"{name:<34} codes {row['codes']}  p50 {row['p50_s']:.2f} s  p95 {row['p95_s']:.2f} s  "
          f"peak RSS {row['peak_rss_mb']:.0f} MB", flush=True)
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--n", type=int, default=200, help="concurrent normal requests")
    parser.add_argument("--stalled", type=int, default=500, help="stalled connections held during the second burst")
    parser.add_argument("--read-timeout", type=float, default=10.0, help="the server's --read-timeout")
    parser.add_argument("--photo", type=Path, default=EXAMPLES / "astronaut_face.jpg")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    photo = args.photo.read_bytes()
    server = start_server(args.model, args.port, env={}, serve_args=("--read-timeout", str(args.read_timeout)))
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_healthy(base, server)
        timed_burst(base, photo, 1)  # warm-up
        sampler = RssSampler(server.pid)
        rows = [phase_row(f"{args.n} requests alone", *timed_burst(base, photo, args.n), sampler.peak_since_mark())]
        sampler.mark()
        opened_at = time.monotonic()
        stalled = open_stalled(args.port, args.stalled)
        opening_s = time.monotonic() - opened_at
        with ThreadPoolExecutor(1) as watcher:  # sees each stalled connection close while the burst runs
            shedding = watcher.submit(wait_closed, stalled, opened_at, args.read_timeout * 3 + 10)
            codes, seconds = timed_burst(base, photo, args.n)
            rows.append(phase_row(f"{args.n} requests, {args.stalled} stalled held", codes, seconds, sampler.peak_since_mark()))
            closed_after, answers = shedding.result()
        sampler.stop()
        shed = {"opening_s": opening_s, "closed": len(closed_after), "first_closed_after_s": min(closed_after, default=None),
                "last_closed_after_s": max(closed_after, default=None), "answers": dict(answers)}
        print(f"stalled connections: opened in {opening_s:.1f} s; {len(closed_after)} of {args.stalled} closed by the "
              f"server {shed['first_closed_after_s']:.1f}-{shed['last_closed_after_s']:.1f} s after the first opened "
              f"(read timeout {args.read_timeout:.0f} s); {dict(answers)}")
        ratio = rows[1]["p95_s"] / rows[0]["p95_s"]
        print(f"p95 with stalled clients / without: {ratio:.2f}x; VmHWM {read_status_kb(server.pid)['VmHWM'] / 1024:.0f} MB")
        if args.json:
            report = {"settings": {"n": args.n, "stalled": args.stalled, "read_timeout_s": args.read_timeout,
                                   "photo": args.photo.name}, "phases": rows, "stalled": shed, "p95_ratio": ratio}
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
