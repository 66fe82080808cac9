"""Headless Chromium (Debian's `chromium`), driven over the DevTools protocol on a pipe (--remote-debugging-pipe).

The pipe needs no port: the browser may run in a lab namespace (`prefix` is `ip netns exec <ns>`) while the test
talks to it from outside. Messages are JSON, each ended by a NUL byte; commands to the browser's own target, and
with a session id to the page attached with Target.attachToTarget (flatten).
"""

from __future__ import annotations

import base64
import json
import os
import select
import subprocess
import time
from pathlib import Path

CHROMIUM = "chromium"


class BrowserError(Exception):
    """Chromium did not start, or a DevTools command failed or went unanswered."""


class Browser:
    """One headless Chromium with one page; a context manager that stops the browser."""

    def __init__(self, profile: Path, prefix: tuple[str, ...] = (), width: int = 1500, height: int = 560) -> None:
        profile.mkdir(parents=True, exist_ok=True)
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()
        # Chromium reads commands from fd 3 and writes answers to fd 4.
        self._process = subprocess.Popen(
            [*prefix, CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--user-data-dir=%s" % profile, "--window-size=%d,%d" % (width, height), "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=(profile / "chromium.log").open("w"),
            pass_fds=(3, 4), preexec_fn=lambda: (os.dup2(commands_read, 3), os.dup2(answers_write, 4)))
        os.close(commands_read)
        os.close(answers_write)
        self._next_id = 0
        self._buffer = b""
        page = next(target for target in self.command("Target.getTargets")["targetInfos"] if target["type"] == "page")
        self._session = self.command("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
        self.command("Page.enable", session=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *_exc_info) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        os.close(self._commands)
        os.close(self._answers)

    def command(self, method: str, session: bool = False, timeout: float = 30, **params) -> dict:
        """Send one DevTools command and return its result; events that arrive meanwhile are dropped."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._next_id:
                if "error" in answer:
                    raise BrowserError("%s: %s" % (method, answer["error"]))
                return answer["result"]

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or self._process.poll() is not None:
                raise BrowserError("chromium gave no answer (exit %s)" % self._process.poll())
            ready = select.select([self._answers], [], [], left)[0]
            if ready:
                chunk = os.read(self._answers, 1 << 20)
                if not chunk:
                    raise BrowserError("chromium closed its DevTools pipe")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def open(self, url: str, timeout: float = 30) -> None:
        """Load `url` and wait until its document is complete."""
        self.command("Page.navigate", session=True, url=url)
        deadline = time.monotonic() + timeout
        while self.evaluate("document.readyState") != "complete" or self.evaluate("location.href") == "about:blank":
            if time.monotonic() > deadline:
                raise BrowserError("%s did not load within %.0f s" % (url, timeout))
            time.sleep(0.1)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page."""
        result = self.command("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise BrowserError("%s: %s" % (expression, result["exceptionDetails"].get("text")))
        return result["result"].get("value")

    def screenshot(self, path: Path) -> Path:
        """Save the page as it looks now, as a PNG."""
        path.write_bytes(base64.b64decode(self.command("Page.captureScreenshot", session=True, format="png")["data"]))
        return path
