"""Memory of the real server under bursts: peak and after-burst RSS, and the status codes.

    python benchmarks/bench_server_memory.py [--model PATH] [--n 50] [--n-huge 50] [--huge-sides 7000,4000]
        [--server-env MALLOC_ARENA_MAX=2] [--no-trim] [--photos DIR_OR_FILE ...] [--json docs/results/server_memory.json]

Starts `agegender serve` (uvicorn, the bundled model unless --model) as a subprocess, sends one
warm-up request, then bursts of `--n` concurrent uploads: ordinary photos (examples/astronaut.jpg,
plus UTKFace/LFW photos from $AGEGENDER_DATA where present), then for every `--huge-sides` S an
S x S PNG that compresses to a few tens of KB (a smooth gradient) and an S x S JPEG. Between bursts
it waits `--settle` seconds. A thread samples the server's VmRSS every 10 ms from /proc/PID/status
(psutil is not a dependency); VmHWM is the kernel's own peak. Printed per phase: status codes,
peak RSS during the burst, RSS once the burst is over, and the wall time; `--json` writes the same
for tools/render_results.py.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SHARED = [DATA_ROOT / "utkface", DATA_ROOT / "lfw_dev"]


def read_status_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of `pid` in kB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0])
    return values


class RssSampler:
    """Samples VmRSS in a background thread; `peak_since_mark` is the largest value since `mark()`."""

    def __init__(self, pid: int, every_s: float = 0.01):
        self.pid, self.every_s = pid, every_s
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, read_status_kb(self.pid)["VmRSS"])
            time.sleep(self.every_s)

    def mark(self) -> None:
        self._peak = read_status_kb(self.pid)["VmRSS"]

    def peak_since_mark(self) -> int:
        return self._peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def encode(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **({"quality": 90} if fmt == "JPEG" else {"compress_level": 9}))
    return buffer.getvalue()


def huge_image(side: int, fmt: str) -> bytes:
    """A side x side smooth gradient: tens of KB on disk, side * side * 3 bytes once decoded."""
    ramp = (np.arange(side, dtype=np.uint32) * 255 // max(1, side - 1)).astype(np.uint8)
    rgb = np.empty((side, side, 3), np.uint8)
    rgb[:, :, 0] = ramp[None, :]
    rgb[:, :, 1] = ramp[:, None]
    rgb[:, :, 2] = 128
    return encode(Image.fromarray(rgb), fmt)


def ordinary_photos(extra: list[Path], n: int, seed: int = 0) -> list[tuple[str, bytes]]:
    files = [EXAMPLES / "astronaut.jpg", EXAMPLES / "astronaut_face.jpg"]
    for source in extra:
        if source.is_dir():
            names = sorted(p for p in source.iterdir() if p.suffix.lower() in (".jpg", ".png"))
            files += random.Random(seed).sample(names, min(len(names), n // 2))
        elif source.is_file():
            files.append(source)
    return [(p.name, p.read_bytes()) for p in files]


# --no-trim: the same server with malloc_trim after a burst switched off, to measure what it does.
NO_TRIM = "import agegender.serving.app as app; app._load_malloc_trim = lambda: (lambda: None); "


def start_server(
    model: str | None, port: int, env: dict[str, str], trim: bool = True, serve_args: tuple[str, ...] = ()
) -> subprocess.Popen:
    code = ("" if trim else NO_TRIM) + "from agegender.cli import main; main()"
    command = [sys.executable, "-c", code, "serve", "--port", str(port), *serve_args]
    if model:
        command += ["--model", model]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    return subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_healthy(base: str, server: subprocess.Popen, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited: {server.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit("server did not become healthy")


def burst(base: str, uploads: list[tuple[str, bytes]]) -> Counter:
    def send(upload: tuple[str, bytes]) -> int:
        name, data = upload
        try:
            return httpx.post(f"{base}/predict", files={"file": (name, data)}, timeout=600).status_code
        except httpx.HTTPError as error:
            return f"error {type(error).__name__}"

    with ThreadPoolExecutor(max_workers=len(uploads)) as pool:
        return Counter(pool.map(send, uploads))


def run_phase(name: str, base: str, pid: int, sampler: RssSampler, uploads, settle_s: float) -> dict:
    sampler.mark()
    start = time.perf_counter()
    codes = burst(base, uploads)
    seconds = time.perf_counter() - start
    peak = sampler.peak_since_mark()
    time.sleep(settle_s)
    after = read_status_kb(pid)["VmRSS"]
    row = {"phase": name, "codes": dict(codes), "peak_mb": peak / 1024, "after_mb": after / 1024, "s": seconds}
    print(f"{name:<22} codes {dict(codes)}  peak {peak / 1024:7.0f} MB  after {after / 1024:7.0f} MB  {seconds:6.1f} s",
          flush=True)
    return row


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--n", type=int, default=50, help="concurrent requests per burst")
    parser.add_argument("--n-huge", type=int, default=None, help="concurrent requests per huge burst (default --n)")
    parser.add_argument("--huge-sides", default="7000,4000", help="comma-separated sides of the huge images")
    parser.add_argument("--formats", default="PNG,JPEG", help="formats of the huge images")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds between a burst and its 'after' RSS")
    parser.add_argument("--no-trim", action="store_true", help="switch the server's malloc_trim off")
    parser.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the server process")
    parser.add_argument("--photos", type=Path, nargs="*", default=[p for p in SHARED if p.is_dir()])
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    env = dict(item.split("=", 1) for item in args.server_env)
    photos = ordinary_photos(args.photos, args.n)
    huge = {(side, fmt): huge_image(side, fmt) for side in map(int, args.huge_sides.split(",") if args.huge_sides else [])
            for fmt in args.formats.split(",")}
    server = start_server(args.model, args.port, env, trim=not args.no_trim)
    base = f"http://127.0.0.1:{args.port}"
    try:
        wait_healthy(base, server)
        burst(base, [photos[0]])  # warm-up: first inference allocates the model's working memory
        idle = read_status_kb(server.pid)["VmRSS"]
        print(f"server env {env or '{}'}, malloc_trim {'off' if args.no_trim else 'on'}; idle after one request {idle / 1024:.0f} MB; {len(photos)} distinct photos")
        sampler = RssSampler(server.pid)
        cycle = [photos[i % len(photos)] for i in range(args.n)]
        phases = [run_phase("ordinary photos", base, server.pid, sampler, cycle, args.settle)]
        for (side, fmt), data in huge.items():
            label = f"{side}x{side} {fmt} ({len(data) // 1024} KB)"
            uploads = [(f"huge.{fmt.lower()}", data)] * (args.n_huge or args.n)
            phases.append(run_phase(label, base, server.pid, sampler, uploads, args.settle))
        sampler.stop()
        high_water = read_status_kb(server.pid)["VmHWM"] / 1024
        print(f"VmHWM (whole run) {high_water:.0f} MB")
        if args.json:
            settings = {"model": args.model or "bundled", "n": args.n, "n_huge": args.n_huge or args.n, "env": env,
                        "malloc_trim": not args.no_trim, "photos": len(photos), "settle_s": args.settle}  # fmt: skip
            report = {"settings": settings, "idle_mb": idle / 1024, "phases": phases, "vmhwm_mb": high_water}
            args.json.write_text(json.dumps(report, indent=2) + "\n")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
