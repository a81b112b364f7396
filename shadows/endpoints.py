"""The HTTP endpoints of a worker: health check and Prometheus metrics.

Each port is a small threaded HTTP server (standard library), not a server on the
worker's event loop: a blocked loop must not silence the very check that reports it, and
a scrape must not wait for a busy loop (only the Redis depths do, for about a second).
When both use the same port, ``/metrics`` answers metrics and every other path the
health check; otherwise every path answers what its port serves.
"""

from __future__ import annotations

import errno
import json
import logging
import socket
import socketserver
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY as DEFAULT_REGISTRY
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric

from . import metrics

if TYPE_CHECKING:
    from .health import HealthCheck

logger = logging.getLogger("shadows.worker")

#: Every interface: probes and scrapers come from outside. IPv6 and IPv4 together where
#: the system allows it, else IPv4 only.
HOSTS = (("::", socket.AF_INET6), ("0.0.0.0", socket.AF_INET))


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
    health: HealthCheck | None
    metrics: bool

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


def _bind(port: int) -> _Server:
    """A server on every interface, dual-stack when possible."""
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


class _Handler(BaseHTTPRequestHandler):
    server: _Server

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

    def __init__(self, port: int, health: HealthCheck | None, serve_metrics: bool) -> None:
        try:
            self._server = _bind(port)
        except OSError as error:
            what = " and ".join(
                name
                for name, on in (("health check", health is not None), ("metrics", serve_metrics))
                if on
            )
            raise EndpointError(f"cannot serve the {what} on port {port}: {error}") from None
        self._server.health = health
        self._server.metrics = serve_metrics
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
