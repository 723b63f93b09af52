"""A real HTTP server on loopback for the download tests: serves in-memory files with Range support
(206 + Content-Range), counts requests and body bytes served per path, and can drop the connection after
N body bytes for its next few requests."""

from __future__ import annotations

import re
import socket
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    server: LoopbackServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        srv = self.server
        with srv.lock:
            srv.requests[self.path] += 1
            srv.ranges.append((self.path, self.headers.get("Range")))
        body = srv.files.get(self.path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and srv.ranges_supported:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body) - start))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        payload = body[start:]
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
    """`with LoopbackServer({"/a.mp4": data}) as srv: srv.url("/a.mp4")`; `srv.drop_after(path, n, times)`."""

    daemon_threads = True

    def __init__(self, files: dict[str, bytes], ranges_supported: bool = True) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.ranges_supported = ranges_supported
        self.lock = threading.Lock()
        self.requests: Counter[str] = Counter()
        self.served: Counter[str] = Counter()
        self.ranges: list[tuple[str, str | None]] = []
        self.drops: dict[str, tuple[int, int] | None] = {}
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"

    def drop_after(self, path: str, nbytes: int, times: int = 1) -> None:
        """The next `times` responses for `path` close the connection after `nbytes` body bytes."""
        self.drops[path] = (nbytes, times)

    def __enter__(self) -> LoopbackServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
        self.server_close()


def refused_url(path: str = "/x.mp4") -> str:
    """A loopback URL on a port nothing listens on (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
