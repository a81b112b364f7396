"""The HTTP endpoints of a worker: health check and Prometheus metrics.

Each port is a small threaded HTTP server (standard library), not a server on the
worker's event loop: a blocked loop must not silence the very check that reports it, and
a scrape must not wait for a busy loop (only the Redis depths do, for about a second).
When both use the same port, ``/metrics`` answers metrics and every other path the
health check; otherwise every path answers what its port serves.

A flood of requests must not slow the worker: each port answers at most
:data:`MAX_CONCURRENT_REQUESTS` at once and turns the others away at once with ``503``
(without starting a thread for them), and the checks read Redis through a connection of
their own (see ``Worker``), never the worker's pool.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from shadows.operations import metrics

if TYPE_CHECKING:
    from shadows.operations.health import HealthCheck

logger = logging.getLogger("shadows.worker")

#: Every interface: probes and scrapers come from outside. IPv6 and IPv4 together where
#: the system allows it, else IPv4 only. (A worker's ``endpoint_host`` narrows it.)
HOSTS = (("::", socket.AF_INET6), ("0.0.0.0", socket.AF_INET))
#: Requests one port answers at once; more get ``503`` straight away.
MAX_CONCURRENT_REQUESTS = 4
#: How long a connection may take to send its request before it is dropped.
REQUEST_TIMEOUT = 5.0
_BUSY_BODY = (
    json.dumps(
        {
            "status": "busy",
            "reason": f"more than {MAX_CONCURRENT_REQUESTS} requests at once: try again",
        }
    ).encode()
    + b"\n"
)
_BUSY = (
    b"HTTP/1.0 503 Service Unavailable\r\n"
    b"Content-Type: application/json\r\n"
    b"Content-Length: " + str(len(_BUSY_BODY)).encode() + b"\r\n"
    b"Cache-Control: no-store\r\nRetry-After: 1\r\nConnection: close\r\n\r\n" + _BUSY_BODY
)


def checked_host(host: str | None) -> str | None:
    """``host`` if it can name an interface to listen on (``None``: every interface)."""
    if host is not None and (not isinstance(host, str) or not host.strip()):
        raise ValueError(f"endpoint_host must be a host name or address, not {host!r}")
    return host


class EndpointError(RuntimeError):
    """A port that cannot be served (already in use, not allowed)."""


class _Served(CollectorRegistry):
    """The shadows registry, then the default one without names the first already has."""

    def collect(self) -> Iterable[Metric]:
        names: set[str] = set()
        for family in metrics.REGISTRY.collect():
            names.add(family.name)
            yield family
        for family in DEFAULT_REGISTRY.collect():
            if family.name not in names:
                yield family


SERVED = _Served()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    #: Connections waiting to be accepted: a burst is answered (503 if need be), not dropped.
    request_queue_size = 128
    health: HealthCheck | None
    metrics: bool
    slots: threading.BoundedSemaphore

    def process_request(self, request: Any, client_address: Any) -> None:
        """A thread per request, up to the cap; beyond it, ``503`` from this thread."""
        if not self.slots.acquire(blocking=False):
            self._turn_away(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _turn_away(self, request: socket.socket) -> None:
        with contextlib.suppress(OSError):
            # Read what the client sent, briefly: closing a socket with unread data
            # resets the connection, and the client would not see the answer.
            request.settimeout(0.05)
            request.recv(65536)
        with contextlib.suppress(OSError):
            request.sendall(_BUSY)
        self.shutdown_request(request)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks up the host's FQDN, which can take seconds where
        # DNS is slow; nothing here needs it.
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        socketserver.TCPServer.server_bind(self)
        self.server_name = "shadows"
        self.server_port = self.server_address[1]

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away mid-answer is not worth a traceback on stderr."""
        logger.debug("HTTP request from %s failed", client_address, exc_info=True)


def _bind(port: int, host: str | None) -> _Server:
    """A server on ``host``, or on every interface (dual-stack when possible)."""
    if host is not None:
        return _bind_host(port, host)
    for host, family in HOSTS:
        server_class = type("_BoundServer", (_Server,), {"address_family": family})
        try:
            server: _Server = server_class((host, port), _Handler)
            return server
        except OSError as error:
            # No IPv6 here: try IPv4. Anything else (a port in use) is the answer.
            if family == socket.AF_INET6 and error.errno in _NO_IPV6:
                continue
            raise
    raise OSError(errno.EAFNOSUPPORT, "no address family to serve on")  # pragma: no cover


_NO_IPV6 = {errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL, errno.EPROTONOSUPPORT}


def _bind_host(port: int, host: str) -> _Server:
    """A server on the first address of ``host`` (a name or an IPv4 or IPv6 address)."""
    addresses = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP, flags=socket.AI_PASSIVE
    )
    family, _, _, _, address = addresses[0]
    server_class = type("_BoundServer", (_Server,), {"address_family": family})
    server: _Server = server_class(address[:2], _Handler)
    return server


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = REQUEST_TIMEOUT

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def _answer(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        server = self.server
        try:
            if server.metrics and (server.health is None or path.rstrip("/") == "/metrics"):
                status, content_type, payload = 200, *self._metrics()
            elif server.health is not None:
                healthy, details = server.health.evaluate()
                status = 200 if healthy else 503
                content_type = "application/json"
                payload = json.dumps(details).encode() + b"\n"
            else:  # pragma: no cover - a server always serves something
                status, content_type, payload = 404, "text/plain", b"not found\n"
        except Exception as error:
            logger.exception("The %s endpoint failed", path)
            status, content_type = 500, "application/json"
            payload = json.dumps({"status": "error", "reason": str(error)}).encode() + b"\n"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def _metrics(self) -> tuple[str, bytes]:
        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        return content_type, encoder(SERVED)

    def log_message(self, format: str, *args: object) -> None:
        """Probes come every few seconds: keep them out of the log."""


class Endpoint:
    """One port, served by a thread until :meth:`close`."""

    def __init__(
        self,
        port: int,
        health: HealthCheck | None,
        serve_metrics: bool,
        host: str | None = None,
    ) -> None:
        try:
            self._server = _bind(port, host)
        except OSError as error:  # socket.gaierror (an unknown host) included
            what = " and ".join(
                name
                for name, on in (("health check", health is not None), ("metrics", serve_metrics))
                if on
            )
            where = f"port {port}" if host is None else f"{host} port {port}"
            raise EndpointError(f"cannot serve the {what} on {where}: {error}") from None
        self._server.health = health
        self._server.metrics = serve_metrics
        self._server.slots = threading.BoundedSemaphore(MAX_CONCURRENT_REQUESTS)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"shadows-http-{port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port actually bound (useful when asked for port 0)."""
        return int(self._server.server_address[1])

    def close(self) -> None:
        """Stop serving (blocks for at most the server's poll interval)."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
