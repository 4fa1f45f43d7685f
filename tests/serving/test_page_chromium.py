"""End-to-end check of the web page in headless Chromium: upload a photo, see a box and label.

Chromium is driven over --remote-debugging-pipe (DevTools protocol on fds 3/4, NUL-separated
JSON), so no websocket or browser-automation package is needed. Skipped without Chromium.
Set AGEGENDER_SCREENSHOT=path.png to keep the screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.serving.app import create_app
from tests.serving.conftest import live_server

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")


class DevTools:
    """A minimal DevTools-protocol client over Chromium's debugging pipe."""

    def __init__(self, user_data_dir: Path):
        to_browser_read, self._write = os.pipe()
        self._read, from_browser_write = os.pipe()

        def child_fds() -> None:  # the pipe protocol expects commands on fd 3 and answers on fd 4
            # Park both ends above 10 first, in case either already is fd 3 or 4; dup2 clears CLOEXEC.
            commands = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
            answers = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)
            os.dup2(commands, 3)
            os.dup2(answers, 4)

        self.process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             f"--user-data-dir={user_data_dir}", "--window-size=1000,800", "about:blank"],
            close_fds=False, preexec_fn=child_fds,  # close_fds would close fds 3/4 after preexec_fn
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        os.close(to_browser_read)
        os.close(from_browser_write)
        self._buffer = b""
        self._next_id = 0
        self.session: str | None = None

    def send(self, method: str, params: dict | None = None, timeout: float = 20.0) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if self.session:
            message["sessionId"] = self.session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            while b"\0" not in self._buffer:
                chunk = os.read(self._read, 1 << 20)
                if not chunk:
                    raise RuntimeError("chromium closed the debugging pipe")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]
        raise TimeoutError(method)

    def open_page(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {"width": 1000, "height": 800, "deviceScaleFactor": 1, "mobile": False})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True})
        return result["result"].get("value")

    def close(self) -> None:
        self.process.kill()
        self.process.wait(10)
        os.close(self._write)
        os.close(self._read)


@pytest.fixture()
def server_url(tiny_predictor):
    with live_server(create_app(tiny_predictor)) as (port, _):
        yield f"http://127.0.0.1:{port}/"


def _wait_for(browser: DevTools, expression: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = browser.evaluate(expression)
        if value:
            return value
        time.sleep(0.1)
    raise TimeoutError(expression)


def test_uploading_a_photo_draws_boxes_and_labels(server_url, tmp_path):
    photo = base64.b64encode((EXAMPLES / "astronaut.jpg").read_bytes()).decode()
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open_page(server_url)
        _wait_for(browser, "document.readyState === 'complete' && !!document.getElementById('photo')")
        browser.evaluate(f"""(() => {{
            const bytes = Uint8Array.from(atob("{photo}"), c => c.charCodeAt(0));
            const input = document.getElementById("photo");
            const files = new DataTransfer();
            files.items.add(new File([bytes], "astronaut.jpg", {{ type: "image/jpeg" }}));
            input.files = files.files;
            input.dispatchEvent(new Event("change"));
        }})()""")  # fmt: skip
        status = _wait_for(browser, "(s => s.includes('face(s)') && s)(document.getElementById('status').textContent)")
        assert status.startswith("1 face(s) in astronaut.jpg")
        faces = browser.evaluate("[...document.querySelectorAll('#faces li')].map(li => li.textContent)")
        assert len(faces) == 1 and "age" in faces[0]
        shot = base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"})["data"])
    finally:
        browser.close()
    path = Path(os.environ.get("AGEGENDER_SCREENSHOT", tmp_path / "page.png"))
    path.write_bytes(shot)
    pixels = np.asarray(Image.open(path).convert("RGB")).astype(int)
    # The label tag is filled with the male or female colour of inference/draw.py.
    male = np.all(np.abs(pixels - (60, 140, 255)) < 40, axis=2).sum()
    female = np.all(np.abs(pixels - (230, 80, 160)) < 40, axis=2).sum()
    assert max(male, female) > 200


def test_api_docs_render_without_internet(server_url, tmp_path):
    browser = DevTools(tmp_path / "profile")
    try:
        browser.open_page(server_url + "docs")
        title = _wait_for(browser, "(e => e && e.textContent)(document.querySelector('.swagger-ui .info .title'))")
        operations = browser.evaluate("document.querySelectorAll('.opblock-summary-path').length")
    finally:
        browser.close()
    assert title.startswith("agegender") and operations >= 2  # /health and /predict
