"""Headless Debian chromium driven over the DevTools protocol (CDP) with a
small synchronous websockets client: enough to open tabs, evaluate
JavaScript and wait for a condition. No browser is downloaded."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(RuntimeError):
    pass


class Tab:
    def __init__(self, websocket_url: str):
        from websockets.sync.client import connect

        self._stack = ExitStack()
        self._socket = self._stack.enter_context(connect(websocket_url, max_size=None, open_timeout=10))
        self._next_id = 0

    def call(self, method: str, **params: Any) -> dict:
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:  # events arrive in between; only the answer to this call matters here
            message = json.loads(self._socket.recv(timeout=20))
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})

    def evaluate(self, expression: str) -> Any:
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0) -> Any:
        """The expression's value once it is truthy; BrowserError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:  # the page is between documents
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression!r}")
            time.sleep(0.05)

    def open(self, url: str) -> None:
        """Navigate and wait until the new document has loaded."""
        self.call("Page.navigate", url=url)
        self.wait_for(f"location.href === {json.dumps(url)} && document.readyState === 'complete'")

    def close(self) -> None:
        self._stack.close()


class Browser:
    def __init__(self, profile: Path):
        self._process = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--no-default-browser-check", "--disable-dev-shm-usage",
             f"--user-data-dir={profile}", "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._port = self._devtools_port(profile / "DevToolsActivePort")

    def _devtools_port(self, path: Path) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise BrowserError(f"chromium exited with {self._process.returncode}")
            if path.exists() and path.read_text().strip():
                return int(path.read_text().split()[0])
            time.sleep(0.05)
        raise BrowserError("chromium did not open its DevTools port")

    def new_tab(self) -> Tab:
        """A new tab: its own browser session (sessionStorage), the profile's localStorage."""
        request = urllib.request.Request(f"http://127.0.0.1:{self._port}/json/new?about:blank", method="PUT")
        with urllib.request.urlopen(request, timeout=10) as answer:
            target = json.load(answer)
        tab = Tab(target["webSocketDebuggerUrl"])
        tab.call("Page.enable")
        return tab

    def close(self) -> None:
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


@contextmanager
def browser(profile: Path) -> Iterator[Browser]:
    started = Browser(profile)
    try:
        yield started
    finally:
        started.close()
