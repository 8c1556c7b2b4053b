"""Open a page in headless Chromium and report what happened: the console's errors and
warnings, uncaught exceptions, every URL the page asked for, a value the page computed, and
a screenshot. For checking the avatar page (export/viewer.py) as a person would see it.

Chromium is driven over the DevTools protocol through a pipe (`--remote-debugging-pipe`:
JSON messages ended by a NUL byte, commands on the browser's fd 3, answers and events on
its fd 4), so no port is opened and nothing beyond the standard library is needed. WebGL
renders on the CPU (SwiftShader through ANGLE), so a machine without a GPU or display works.
"""

from __future__ import annotations

import base64
import dataclasses
import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"  # Debian's package (`apt-get install chromium`)
FLAGS = (
    "--headless", "--no-sandbox", "--no-first-run", "--no-default-browser-check",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-quic", "--disable-extensions", "--disable-dev-shm-usage", "--mute-audio",
    "--hide-scrollbars", "--use-gl=angle", "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader", "--remote-debugging-pipe",
)  # fmt: skip


@dataclasses.dataclass
class PageReport:
    value: object  # what the `until` expression gave last
    console: list[tuple[str, str]]  # (level, text): console.*, exceptions, browser log
    requests: list[str]  # every URL the page requested (documents, scripts, data:, blob:)
    screenshot: bytes | None  # PNG

    def errors(self) -> list[str]:
        return [text for level, text in self.console if level == "error"]


def find_chromium() -> str | None:
    """Debian's /usr/bin/chromium, else chromium / google-chrome on PATH, else None."""
    if os.access(CHROMIUM, os.X_OK):
        return CHROMIUM
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if path := shutil.which(name):
            return path
    return None


class PageTimeout(TimeoutError):
    """`until` stayed falsy; .report holds what the page did meanwhile."""

    def __init__(self, message: str, report: PageReport):
        super().__init__(message)
        self.report = report


class _Closed(RuntimeError):
    pass


class _DevTools:
    """Commands and events over the pipe; events are kept in `events` as they arrive."""

    def __init__(self, write_fd: int, read_fd: int, proc: subprocess.Popen):
        self.write_fd, self.read_fd, self.proc = write_fd, read_fd, proc
        self.buffer, self.next_id, self.events = b"", 0, []

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.read_fd], [], [], max(0.0, min(left, 1.0)))
            if ready:
                chunk = os.read(self.read_fd, 1 << 20)
                if not chunk:
                    raise _Closed("Chromium closed its DevTools pipe (it exited or crashed)")
                self.buffer += chunk
            elif left <= 0:
                raise TimeoutError("Chromium did not answer in time")
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:  # fmt: skip
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"DevTools {method}: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def drain(self, seconds: float = 0.0) -> None:
        """Collect the events that have arrived or arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                reply = self._read(deadline)
            except (TimeoutError, _Closed):
                return
            if "method" in reply:
                self.events.append(reply)


def _console(events: list[dict]) -> tuple[list[tuple[str, str]], list[str]]:
    console, requests = [], []
    for ev in events:
        method, p = ev["method"], ev.get("params", {})
        if method == "Runtime.consoleAPICalled":
            level = {"warning": "warning", "error": "error", "assert": "error"}.get(p["type"])
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            console.append((level or "info", text))
        elif method == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            text = d.get("exception", {}).get("description") or d.get("text", "")
            console.append(("error", f"uncaught: {text}"))
        elif method == "Log.entryAdded":
            e = p["entry"]
            console.append((e["level"], f"{e['source']}: {e['text']} {e.get('url', '')}".strip()))
        elif method == "Network.requestWillBeSent":
            requests.append(p["request"]["url"])
    return console, requests


def open_page(url: str | os.PathLike, *, until: str = "true", timeout: float = 30.0,
              size: tuple[int, int] = (800, 600), before_screenshot: str | None = None,
              screenshot: bool = True, full_page: bool = False,
              chromium: str | None = None) -> PageReport:  # fmt: skip
    """Load `url` (a path is made a file:// URL) at `size` (CSS pixels = screenshot pixels),
    evaluate the JavaScript expression `until` every 0.1 s until its value (as JSON: a DOM
    node comes back as {}) is truthy in Python, then run
    `before_screenshot` (an expression; a promise is awaited), let two frames render and
    take a screenshot (of the window, or with `full_page` of the whole page's height).
    PageTimeout when `until` stays falsy for `timeout` seconds; RuntimeError (with the end
    of Chromium's log) when it does not start; FileNotFoundError without Chromium."""
    url, exe = str(url), chromium or find_chromium()
    if exe is None:
        raise FileNotFoundError(f"{CHROMIUM}: Chromium is not installed (Debian: apt-get "
                                "install chromium)")  # fmt: skip
    if not re.match(r"[a-zA-Z][a-zA-Z0-9+.-]+:", url):  # a path, not a URL
        url = Path(url).absolute().as_uri()
    # Chromium reads fd 3 and writes fd 4: bash moves the pipe ends there (no preexec_fn,
    # as callers may run threads); they start at fd 10 or above, clear of 3 and 4.
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    child_r, child_w = (fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
                        for fd in (to_browser_r, from_browser_w))  # fmt: skip
    os.close(to_browser_r)
    os.close(from_browser_w)
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    log = tempfile.TemporaryFile()
    shell = f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-'
    argv = ["bash", "-c", shell, "bash", exe, *FLAGS, f"--user-data-dir={profile}",
            f"--window-size={size[0]},{size[1]}", "about:blank"]  # fmt: skip
    env = dict(os.environ, DBUS_SESSION_BUS_ADDRESS="disabled:")
    proc = subprocess.Popen(argv, pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL,
                            stdout=log, stderr=log, env=env)  # fmt: skip
    os.close(child_r)
    os.close(child_w)
    dt = _DevTools(to_browser_w, from_browser_r, proc)
    value, shot = None, None
    try:
        target = dt.call("Target.createTarget", {"url": "about:blank"}, timeout=timeout)
        session = dt.call("Target.attachToTarget", {"targetId": target["targetId"],
                                                    "flatten": True})["sessionId"]  # fmt: skip
        for domain in ("Runtime", "Log", "Network", "Page"):
            dt.call(f"{domain}.enable", session=session)
        dt.call("Emulation.setDeviceMetricsOverride", {"width": size[0], "height": size[1],
                "deviceScaleFactor": 1, "mobile": False}, session=session)  # fmt: skip
        dt.call("Page.navigate", {"url": url}, session=session, timeout=timeout)
        deadline = time.monotonic() + timeout

        def evaluate(expression: str):
            r = dt.call("Runtime.evaluate", {"expression": expression, "awaitPromise": True,
                        "returnByValue": True}, session=session, timeout=timeout)  # fmt: skip
            if "exceptionDetails" in r:
                raise RuntimeError(f"{expression}: {r['exceptionDetails'].get('text')}")
            return r["result"].get("value")

        while not (value := evaluate(until)):
            if time.monotonic() > deadline:
                dt.drain()
                console, requests = _console(dt.events)
                raise PageTimeout(f"{url}: `{until}` still {value!r} after {timeout:g} s; "
                                  f"console: {console[-5:]}",
                                  PageReport(value, console, requests, None))  # fmt: skip
            time.sleep(0.1)
        if before_screenshot:
            evaluate(before_screenshot)
        evaluate("new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        if screenshot:
            params = {"format": "png"}
            if full_page:
                height = evaluate("document.documentElement.scrollHeight")
                params.update(captureBeyondViewport=True,
                              clip={"x": 0, "y": 0, "width": size[0], "height": height,
                                    "scale": 1})  # fmt: skip
            png = dt.call("Page.captureScreenshot", params, session=session, timeout=timeout)
            shot = base64.b64decode(png["data"])
        dt.drain(0.2)
        try:
            dt.call("Browser.close", timeout=5)
        except (_Closed, TimeoutError):
            pass
    except _Closed as e:
        log.seek(0)
        tail = log.read()[-3000:].decode("utf-8", "replace")
        raise RuntimeError(f"{exe}: {e}; its log ends:\n{tail}") from None
    finally:
        os.close(to_browser_w)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os.close(from_browser_r)
        log.close()
        shutil.rmtree(profile, ignore_errors=True)
    console, requests = _console(dt.events)
    return PageReport(value, console, requests, shot)
