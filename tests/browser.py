# Copyright: meshops.istio contributors
# Apache License 2.0 (see https://www.apache.org/licenses/LICENSE-2.0)
# SPDX-License-Identifier: Apache-2.0
"""Load a local HTML file in a real browser: Debian's headless Chromium, driven over the DevTools protocol.

    with open_page("/tmp/report.html") as page:
        assert page.errors == []
        assert page.evaluate("document.querySelectorAll('svg.chart').length") == 6

The browser gets a throw-away profile and home directory, every network feature that phones out switched off, and a
host resolver that resolves nothing; every request the page makes is recorded (``page.requests``), so a test can
assert the file needed nothing but itself. Every wait has a deadline; the browser's process group and the temporary
directory are removed whatever happens. websocket-client (a dependency of the kubernetes client) speaks the protocol.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import pathlib
import shutil
import signal
import subprocess
import tempfile
import time
from typing import Any, Dict, Iterator, List, Optional

import websocket

CHROMIUM = "/usr/bin/chromium"
# Nothing that reaches out: no first-run tasks, component or safe-browsing updates, sync, metrics uploads, crash
# reports or extensions; and a host resolver that fails every name (the page has no URL; this makes sure).
FLAGS = [
    "--headless=new",
    "--disable-gpu",
    "--no-sandbox",
    "--remote-debugging-port=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--metrics-recording-only",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-crash-reporter",
    "--disable-breakpad",
    "--disable-dev-shm-usage",
    "--disable-features=Translate,MediaRouter,OptimizationHints",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--mute-audio",
    "--hide-scrollbars",
]


class BrowserError(RuntimeError):
    """Chromium is missing, did not start, or did not answer in time; the message says which and what to do."""


class Page:
    """One page of a running Chromium, over a DevTools session (see open_page)."""

    def __init__(self, ws: websocket.WebSocket, session: str, timeout: float) -> None:
        self._ws = ws
        self._session = session
        self._timeout = timeout
        self._next_id = 100  # above the ids _attach used on the same connection
        self._events: List[Dict[str, Any]] = []
        self.console: List[Dict[str, str]] = []  # every console message, exception and log entry: level, text
        self.requests: List[str] = []  # the URL of every request the page made
        self.pid = 0  # the browser's process (and process group) id
        self.workdir = ""  # its temporary directory: profile, home, log

    @property
    def errors(self) -> List[str]:
        """The console errors, uncaught exceptions and error log entries, as text."""
        return [entry["text"] for entry in self.console if entry["level"] == "error"]

    def _receive(self, deadline: float) -> Dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BrowserError("Chromium did not answer in time")
        self._ws.settimeout(remaining)
        try:
            message = json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException:
            raise BrowserError("Chromium did not answer in time") from None
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"the DevTools connection to Chromium broke: {exc}") from None
        if "method" in message:
            self._record(message)
        return message

    def _record(self, event: Dict[str, Any]) -> None:
        method, params = event["method"], event.get("params") or {}
        if method == "Runtime.consoleAPICalled":
            args = params.get("args") or []
            text = " ".join(str(a.get("value", a.get("description", a.get("type", "")))) for a in args)
            level = "error" if params.get("type") in ("error", "assert") else str(params.get("type"))
            self.console.append({"level": level, "text": text, "source": "console"})
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails") or {}
            description = (details.get("exception") or {}).get("description") or ""
            text = f"{details.get('text', '')} {description}".strip()
            self.console.append({"level": "error", "text": text, "source": "exception"})
        elif method == "Log.entryAdded":
            entry = params.get("entry") or {}
            text = entry.get("text", "") + (f" ({entry['url']})" if entry.get("url") else "")
            self.console.append({"level": str(entry.get("level")), "text": text, "source": "log"})
        elif method == "Network.requestWillBeSent":
            self.requests.append((params.get("request") or {}).get("url", ""))
        self._events.append(event)

    def send(self, method: str, params: Optional[Dict[str, Any]] = None, timeout: Optional[float] = None) -> Any:
        """Send one DevTools command to the page and return its result (events that arrive meanwhile are kept)."""
        self._next_id += 1
        ident = self._next_id
        message = {"id": ident, "method": method, "params": params or {}, "sessionId": self._session}
        deadline = time.monotonic() + (timeout or self._timeout)
        try:
            self._ws.send(json.dumps(message))
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"the DevTools connection to Chromium broke: {exc}") from None
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"Chromium refused {method}: {reply['error'].get('message')}")
                return reply.get("result") or {}

    def wait_for(self, method: str, timeout: Optional[float] = None) -> Dict[str, Any]:
        """The first event named method not yet waited for (one that already arrived counts)."""
        deadline = time.monotonic() + (timeout or self._timeout)
        while True:
            for index, event in enumerate(self._events):
                if event["method"] == method:
                    del self._events[: index + 1]
                    return event.get("params") or {}
            self._receive(deadline)

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (JSON-serialisable values come back as Python values)."""
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            description = (details.get("exception") or {}).get("description") or details.get("text")
            raise BrowserError(f"evaluating {expression!r} failed: {description}")
        return (result.get("result") or {}).get("value")

    def goto(self, path: str) -> None:
        """Open a local file and wait for its load event."""
        self._events.clear()
        url = pathlib.Path(path).resolve().as_uri()
        result = self.send("Page.navigate", {"url": url})
        if result.get("errorText"):
            raise BrowserError(f"Chromium could not open {url}: {result['errorText']}")
        self.wait_for("Page.loadEventFired")

    def screenshot(self, path: str) -> None:
        """A PNG of the whole page (not only the viewport) written to path."""
        size = self.send("Page.getLayoutMetrics").get("cssContentSize") or {}
        clip = {"x": 0, "y": 0, "width": size.get("width", 1280), "height": size.get("height", 900), "scale": 1}
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip})
        pathlib.Path(path).write_bytes(base64.b64decode(data["data"]))


def _devtools_url(profile: pathlib.Path, process: subprocess.Popen, log: pathlib.Path, deadline: float) -> str:
    """The browser's DevTools WebSocket URL, from the DevToolsActivePort file Chromium writes once it listens."""
    marker = profile / "DevToolsActivePort"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BrowserError(f"Chromium exited with {process.returncode} before listening:\n{_tail(log)}")
        try:
            port, path = marker.read_text().split("\n")[:2]
            if port.strip() and path.strip():
                return f"ws://127.0.0.1:{port.strip()}{path.strip()}"
        except (FileNotFoundError, ValueError):
            pass
        time.sleep(0.05)
    raise BrowserError(f"Chromium did not open its DevTools port in time:\n{_tail(log)}")


def _tail(log: pathlib.Path, lines: int = 20) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


def live_processes(group: int) -> List[int]:
    """The processes of a process group that still run (not zombies, which are dead and wait for init to reap
    them: the renderers Chromium's zygote forked are reparented to it when the browser ends)."""
    out = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if len(fields) > 2 and fields[2] == str(group) and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


def _stop(process: subprocess.Popen) -> None:
    """End the browser's process group (only the processes this helper started): TERM, then KILL, until none of
    them runs."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, sig)
        deadline = time.monotonic() + 5.0
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5.0)
        while live_processes(process.pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process.returncode is not None and not live_processes(process.pid):
            return


@contextlib.contextmanager
def open_page(
    path: Optional[str] = None,
    timeout: float = 20.0,
    executable: str = CHROMIUM,
    width: int = 1280,
    height: int = 900,
) -> Iterator[Page]:
    """A headless Chromium page with Runtime, Log, Page and Network enabled, on path (a local file) if given.

    timeout bounds the start and every command. BrowserError when Chromium is missing (install Debian's chromium
    package: make browser), does not start, or does not answer in time.
    """
    if not (os.path.isfile(executable) and os.access(executable, os.X_OK)):
        raise BrowserError(f"{executable} is not there: install Debian's chromium package (make browser).")
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="meshops-browser-"))
    process = None
    ws = None
    try:
        profile, home = tmp / "profile", tmp / "home"
        profile.mkdir()
        home.mkdir()
        # The wrapper script and the crash handler write under HOME: keep all of it in the throw-away directory.
        env = {**os.environ, "HOME": str(home)}
        env.update(XDG_CONFIG_HOME=str(home / ".config"), XDG_CACHE_HOME=str(home / ".cache"))
        env.pop("DISPLAY", None)
        log = tmp / "chromium.log"
        with open(log, "wb") as out:
            process = subprocess.Popen(
                [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its own process group, ended as a whole
            )
        deadline = time.monotonic() + timeout
        url = _devtools_url(profile, process, log, deadline)
        try:
            ws = websocket.create_connection(url, timeout=max(deadline - time.monotonic(), 1.0), suppress_origin=True)
        except (websocket.WebSocketException, OSError) as exc:
            raise BrowserError(f"cannot connect to Chromium's DevTools at {url}: {exc}") from None
        page = _attach(ws, timeout)
        page.pid, page.workdir = process.pid, str(tmp)
        for domain in ("Runtime", "Log", "Page", "Network"):
            page.send(f"{domain}.enable")
        metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}
        page.send("Emulation.setDeviceMetricsOverride", metrics)
        if path is not None:
            page.goto(path)
        yield page
    finally:
        if ws is not None:
            with contextlib.suppress(Exception):
                ws.settimeout(2)
                ws.send(json.dumps({"id": 0, "method": "Browser.close"}))
            with contextlib.suppress(Exception):
                ws.close()
        if process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=3)  # Browser.close ends it gracefully
            _stop(process)
        shutil.rmtree(tmp, ignore_errors=True)


def _attach(ws: websocket.WebSocket, timeout: float) -> Page:
    """A flat DevTools session on the browser's first page (the about:blank it started with)."""
    deadline = time.monotonic() + timeout

    def call(ident: int, method: str, params: Dict[str, Any]) -> Dict[str, Any]:
        ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrowserError(f"Chromium did not answer {method} in time")
            ws.settimeout(remaining)
            try:
                reply = json.loads(ws.recv())
            except websocket.WebSocketTimeoutException:
                raise BrowserError(f"Chromium did not answer {method} in time") from None
            if reply.get("id") == ident:
                if "error" in reply:
                    raise BrowserError(f"Chromium refused {method}: {reply['error'].get('message')}")
                return reply.get("result") or {}

    ident = 0
    while True:
        ident += 1
        targets = [t for t in call(ident, "Target.getTargets", {}).get("targetInfos", []) if t.get("type") == "page"]
        if targets:
            break
        if time.monotonic() > deadline:
            raise BrowserError("Chromium has no page to attach to")
        time.sleep(0.05)
    session = call(ident + 1, "Target.attachToTarget", {"targetId": targets[0]["targetId"], "flatten": True})[
        "sessionId"
    ]
    return Page(ws, session, timeout)
