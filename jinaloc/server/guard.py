"""Connection limits below the HTTP app: how long a client may take to send a request's
headers, and how many connections one address (and all together) may hold.

A slowloris client opens many connections and sends each request a byte at a time; the app
never sees those requests (the token is read with the headers), so the limits live in the
protocol: uvicorn's h11 protocol with a header deadline and a connection count. When the
count is reached, the connection that has waited longest for its headers is closed to make
room (never one whose request has arrived unread); a client that sends its request at once
therefore gets in, and only when every connection is busy with a request is a new one
turned away (503)."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from collections import Counter
from dataclasses import dataclass

from uvicorn.protocols.http.h11_impl import H11Protocol

try:
    import fcntl
    import termios
except ImportError:  # Windows: no way to ask, so every waiting connection may be closed
    fcntl = termios = None  # type: ignore[assignment]


@dataclass(frozen=True)
class ConnectionLimits:
    header_timeout: float = 10.0  # seconds from connect (or the last answer) to whole headers
    per_ip: int = 64  # connections from one address
    total: int = 200  # connections in all (uvicorn's own limit, 256, answers 503)


def _unread(transport) -> int:
    """Bytes received on the connection's socket that the server has not read yet."""
    sock = transport.get_extra_info("socket")
    if sock is None or termios is None or not hasattr(termios, "FIONREAD"):
        return 0
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0" * 4))[0]
    except OSError:
        return 0


def _answer(status: int, reason: str, message: str, code: str) -> bytes:
    """A whole HTTP response in the API's error shape, for a connection about to close."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = json.dumps(
        {"error": {"message": message, "type": kind, "param": None, "code": code}}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


TOO_SLOW = _answer(408, "Request Timeout", "request headers not received in time", "timeout")
FULL = _answer(503, "Service Unavailable", "too many connections: retry shortly", "busy")


def guarded_protocol(limits: ConnectionLimits) -> type[H11Protocol]:
    """uvicorn's h11 protocol with `limits` (pass it as `uvicorn.Config(http=...)`)."""

    class Guarded(H11Protocol):
        waiting_since: float | None = None  # when it began waiting for headers; None: not
        partial = False  # bytes of the awaited headers came in
        _deadline: asyncio.TimerHandle | None = None
        _cycle = None  # the request whose headers arrived last

        def connection_made(self, transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._wait_for_headers()
            if not self._make_room():
                self._stop_waiting()
                self.connections.discard(self)
                transport.write(FULL)
                transport.close()

        def _make_room(self) -> bool:
            """False when the limits are reached and no waiting connection can be closed."""
            ip = self.client[0] if self.client else None
            others = [c for c in self.connections if c is not self]
            same = [c for c in others if c.client and c.client[0] == ip]
            if len(same) >= limits.per_ip:
                pool = same
            elif len(others) >= limits.total:
                pool = others
            else:
                return True
            waiting = [c for c in pool if c.waiting_since is not None]
            if not waiting:
                return False
            # First from the address that holds the most connections (a slowloris's), then
            # one that sent part of its headers, the longest waiting first; never one whose
            # request has arrived but not yet been read (it is about to be served).
            held = Counter(c.client[0] if c.client else None for c in others)
            waiting.sort(
                key=lambda c: (
                    -held[c.client[0] if c.client else None],
                    not c.partial,
                    c.waiting_since,
                )
            )
            oldest = next((c for c in waiting if not _unread(c.transport)), None)
            if oldest is None:
                return False
            oldest.transport.close()
            oldest.connections.discard(oldest)  # counted out now, not when the loop gets to it
            return True

        def _wait_for_headers(self) -> None:
            self.waiting_since = time.monotonic()
            self._deadline = self.loop.call_later(limits.header_timeout, self._too_slow)

        def _stop_waiting(self) -> None:
            self.waiting_since = None
            self.partial = False
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            if self.waiting_since is not None and not self.transport.is_closing():
                self.transport.write(TOO_SLOW)
                self.transport.close()

        def _new_request(self) -> bool:
            """Whether a request's headers came in since the last look."""
            if self.cycle is None or self.cycle is self._cycle:
                return False
            self._cycle = self.cycle
            return True

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._new_request():
                self._stop_waiting()
            elif self.waiting_since is not None:
                self.partial = True

        def on_response_complete(self) -> None:
            super().on_response_complete()  # may start a pipelined request at once
            self._stop_waiting()
            if not self.transport.is_closing() and not self._new_request():
                self._wait_for_headers()  # the next request on this connection

        def connection_lost(self, exc) -> None:
            self._stop_waiting()
            super().connection_lost(exc)

    return Guarded
