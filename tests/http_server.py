"""A real HTTP server on loopback for the download tests: serves in-memory files with Range support
(206 + Content-Range) and a Content-Type guessed from the path, answers HEAD, counts requests and body bytes
served per path, can drop the connection after N body bytes for its next few requests, and can answer a
path with a fixed status, headers and body for its next few requests (404, 410, 429 + Retry-After, an HTML
page at a .mp4 URL). `StallingServer` accepts connections and never answers."""

from __future__ import annotations

import mimetypes
import re
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Answer:
    """A fixed answer to a path for its next `times` requests (forever when None)."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None


def content_type(path: str) -> str:
    """The Content-Type of a served path, from its suffix (application/octet-stream when unknown)."""
    guessed = mimetypes.guess_type(path.split("?")[0])[0]
    if path.endswith(".m3u8"):
        return "application/vnd.apple.mpegurl"
    return guessed or "application/octet-stream"


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=False)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._answer(body=True)

    def _send(self, status: int, headers: dict[str, str], payload: bytes, body: bool) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _answer(self, body: bool) -> None:
        srv = self.server
        with srv.lock:
            srv.requests[self.path] += 1
            srv.log.append((self.command, self.path, time.monotonic()))
            if body:
                srv.ranges.append((self.path, self.headers.get("Range")))
            answer = srv.answers.get(self.path)
            if answer is not None and answer.times is not None:
                answer.times -= 1
                if answer.times <= 0:
                    del srv.answers[self.path]
        if answer is not None:
            headers = {"Content-Type": "text/html; charset=utf-8", **answer.headers}
            self._send(answer.status, headers, answer.body, body)
            return
        data = srv.files.get(self.path)
        if data is None:
            self._send(404, {"Content-Type": "text/html"}, b"<html><body>Not Found</body></html>", body)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.ranges_supported:
            start = int(match.group(1))
            if start >= len(data):
                self._send(416, {"Content-Range": f"bytes */{len(data)}"}, b"", body)
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", content_type(self.path))
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if not body:
            return
        payload = data[start:]
        with srv.lock:
            drop = srv.drops.get(self.path)
            if drop:
                srv.drops[self.path] = (drop[0], drop[1] - 1) if drop[1] > 1 else None
        if drop:
            payload = payload[: drop[0]]
        self.wfile.write(payload)
        self.wfile.flush()
        with srv.lock:
            srv.served[self.path] += len(payload)
        if drop:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)


class LoopbackServer(ThreadingHTTPServer):
    """`with LoopbackServer({"/a.mp4": data}) as srv: srv.url("/a.mp4")`; `srv.drop_after(path, n, times)`;
    `srv.answer(path, Answer(429, headers={"Retry-After": "1"}, times=1))`."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], ranges_supported: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.ranges_supported = ranges_supported
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self.log: list[tuple[str, str, float]] = []  # (method, path, time.monotonic()) per request
        self.drops: dict[str, tuple[int, int] | None] = {}
        self.answers: dict[str, Answer] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def drop_after(self, path: str, nbytes: int, times: int = 1) -> None:
        """The next `times` responses for `path` close the connection after `nbytes` body bytes."""
        self.drops[path] = (nbytes, times)

    def answer(self, path: str, answer: Answer) -> None:
        """Answer `path` with `answer` (status, headers, body) for its next `answer.times` requests."""
        self.answers[path] = answer

    def times(self, path: str, method: str = "GET") -> list[float]:
        """When each `method` request for `path` arrived (time.monotonic())."""
        return [t for m, p, t in self.log if p == path and m == method]

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


class StallingServer:
    """A loopback port that accepts connections and never answers (a stalled server)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.clients: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)

    def _accept(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                self.clients.append(self.sock.accept()[0])
            except OSError:
                continue

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}{path}"

    def __enter__(self) -> StallingServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for client in self.clients:
            client.close()
        self.sock.close()


def refused_url(path: str = "/x.mp4") -> str:
    """A loopback URL on a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
