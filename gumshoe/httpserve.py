"""Serving an app: uvicorn on a bound socket, with bounded connections and timeouts.

Imports config and jsonio, plus uvicorn and httptools. uvicorn closes an idle keep-alive
connection only after a response, and never times out a request whose headers or body
trickle in; `GuardedProtocol` (its httptools protocol, extended) adds what a server facing
the internet needs:

- a new connection, and a keep-alive one between requests, is closed after `idle_timeout`
  without a request;
- a request's headers and body must arrive within `request_timeout` of its first byte, else
  it gets 408 (when no response has started) and the connection is closed;
- at most `max_connections` connections are open (capped below the process's file-descriptor
  limit with headroom for storage): one more gets a 503 JSON answer and is closed at once,
  and the connections already open go on.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from . import jsonio
from .config import Config

log = logging.getLogger(__name__)

FD_HEADROOM_MIN = 64  # descriptors kept for storage (log, flush files, directory, workers)


def connection_cap(max_connections: int) -> int:
    """max_connections, lowered so that open connections leave a quarter of the soft
    RLIMIT_NOFILE (at least FD_HEADROOM_MIN descriptors) to storage."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    headroom = max(FD_HEADROOM_MIN, soft // 4)
    return max(1, min(max_connections, soft - headroom))


def _raw_response(status: int, reason: str, message: str) -> bytes:
    body = jsonio.dumps({"error": message})
    return (f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n").encode() + body


class CoalescingTransport:
    """The connection's transport, with the writes of one loop iteration sent together: uvicorn
    writes a response's head and body separately, two send() calls where one does (writev)."""

    __slots__ = ("_buffer", "_loop", "_scheduled", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._buffer: list[bytes] = []
        self._scheduled = False

    def write(self, data: bytes) -> None:
        self._buffer.append(data)
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._buffer:
            data, self._buffer = self._buffer, []
            if not self._transport.is_closing():
                self._transport.writelines(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:  # is_closing, get_extra_info, pause_reading, ...
        return getattr(self._transport, name)


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with connection caps and request/idle timeouts. The limits
    are class attributes, set on a subclass made per server (`protocol_class`)."""

    idle_timeout = 15.0
    request_timeout = 30.0
    max_connections = 1000
    last_refusal_log = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.transport = CoalescingTransport(transport, self.loop)  # type: ignore[assignment]
        self._request_timer: asyncio.TimerHandle | None = None
        if len(self.connections) > self.max_connections:
            now = self.loop.time()
            if now - GuardedProtocol.last_refusal_log > 1.0:  # at most one line a second
                GuardedProtocol.last_refusal_log = now
                log.warning("refusing connections: %d open (max_connections, %d here)",
                            len(self.connections) - 1, self.max_connections)
            transport.write(_raw_response(503, "Service Unavailable",
                                          f"too many connections (max_connections, "
                                          f"{self.max_connections} here); retry later"))
            transport.close()
            return
        self.timeout_keep_alive_task = self.loop.call_later(self.idle_timeout,
                                                            self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._cancel_request_timer()
        self._request_timer = self.loop.call_later(self.request_timeout, self._request_timed_out)

    def on_message_complete(self) -> None:
        self._cancel_request_timer()
        super().on_message_complete()

    def _cancel_request_timer(self) -> None:
        timer = getattr(self, "_request_timer", None)
        if timer is not None:
            timer.cancel()
            self._request_timer = None

    def _request_timed_out(self) -> None:
        self._request_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle
        if cycle is None or not cycle.response_started:
            self.transport.write(_raw_response(
                408, "Request Timeout", f"the request did not arrive within "
                f"{self.request_timeout:g}s (request_timeout)"))
        if cycle is not None:
            cycle.disconnected = True  # the app's receive() now says http.disconnect
            cycle.message_event.set()
        self.transport.close()


def protocol_class(config: Config) -> type[GuardedProtocol]:
    cap = connection_cap(config.max_connections)
    return type("GumshoeProtocol", (GuardedProtocol,), {
        "idle_timeout": config.idle_timeout, "request_timeout": config.request_timeout,
        "max_connections": cap})


def run(app: Any, sock: socket.socket, config: Config) -> bool:
    """Serve `app` on an already-bound socket until SIGINT/SIGTERM (graceful: in-flight
    requests finish, then the app's shutdown runs). Returns whether the server started."""
    import uvicorn

    proto = protocol_class(config)
    log.info("serving at most %d connections (max_connections; file-descriptor limit %d), "
             "idle_timeout %gs, request_timeout %gs", proto.max_connections,
             resource.getrlimit(resource.RLIMIT_NOFILE)[0], config.idle_timeout,
             config.request_timeout)
    server = uvicorn.Server(uvicorn.Config(
        app, http=proto, log_config=None, access_log=False, lifespan="on",
        timeout_keep_alive=config.idle_timeout,  # type: ignore[arg-type]  # a float works
        timeout_graceful_shutdown=30, server_header=False))
    server.run(sockets=[sock])
    return bool(server.started)
