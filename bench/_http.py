"""A minimal keep-alive HTTP/1.1 client for load generation.

The benchmark's client processes share the machine's two cores with the server they measure:
httpx costs about 0.7 ms of CPU per request, more than the server spends on a profile read.
This client (one socket, Content-Length or chunked bodies, nothing else) costs a few tens of
microseconds, so that the figures describe the server, as `wrk` would.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping


class HttpError(Exception):
    """The connection broke or the answer was not HTTP/1.1 as expected."""


class KeepAlive:
    def __init__(self, base_url: str, headers: Mapping[str, str], timeout: float = 60) -> None:
        host, _, port = base_url.removeprefix("http://").partition(":")
        self.address = (host, int(port or 80))
        self.timeout = timeout
        self.fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self.host = f"Host: {host}\r\n"
        self._sock: socket.socket | None = None
        self._file: socket.SocketIO | None = None

    def _connect(self) -> None:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock, self._file = sock, sock.makefile("rb")  # type: ignore[assignment]

    def local_port(self) -> int:
        """This end's port (the server sees the connection by it); connects if needed."""
        if self._sock is None:
            self._connect()
        assert self._sock is not None
        return int(self._sock.getsockname()[1])

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
        self._sock = self._file = None

    def __enter__(self) -> KeepAlive:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def request(
        self, method: str, path: str, body: bytes | None = None, content_type: str | None = None
    ) -> tuple[int, bytes]:
        """(status, body); one reconnect if the server closed an idle connection."""
        for attempt in (1, 2):
            if self._sock is None:
                self._connect()
            try:
                return self._exchange(method, path, body, content_type)
            except (OSError, HttpError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _exchange(
        self, method: str, path: str, body: bytes | None, content_type: str | None
    ) -> tuple[int, bytes]:
        assert self._sock is not None
        assert self._file is not None
        head = f"{method} {path} HTTP/1.1\r\n{self.host}{self.fixed}"
        if body is not None:
            head += f"Content-Length: {len(body)}\r\n"
            if content_type:
                head += f"Content-Type: {content_type}\r\n"
        self._sock.sendall(head.encode() + b"\r\n" + (body or b""))
        reader = self._file
        status_line = reader.readline()
        if not status_line.startswith(b"HTTP/1.1 "):
            raise HttpError(f"unexpected status line {status_line[:60]!r}")
        status = int(status_line[9:12])
        length, chunked, closing = 0, False, False
        while True:
            line = reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding" and b"chunked" in value.lower():
                chunked = True
            elif name == b"connection" and b"close" in value.lower():
                closing = True
        if chunked:
            parts = []
            while True:
                size = int(reader.readline().split(b";")[0], 16)
                if size == 0:
                    reader.readline()
                    break
                parts.append(reader.read(size))
                reader.readline()
            content = b"".join(parts)
        else:
            content = reader.read(length) if length else b""
        if closing:
            self.close()
        return status, content
