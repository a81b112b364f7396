"""A worker's reporting: its metrics offered to the collectors, its health watched, and
the HTTP endpoints (health check, metrics) served when asked, on connections of their own
(probes and scrapes never take one of the worker's)."""

from __future__ import annotations

import asyncio
import logging

from redis.asyncio import Redis, RedisCluster

from shadows.core.connection import private_client
from shadows.operations.endpoints import Endpoint
from shadows.operations.health import HealthCheck
from shadows.operations.metrics import WorkerMetrics

logger = logging.getLogger("shadows.worker")


class Observing:
    """Started when the worker is entered (or runs), stopped when it is done."""

    def __init__(
        self, name: str, health: HealthCheck, metrics: WorkerMetrics, host: str | None
    ) -> None:
        self.name = name
        self.health = health
        self.metrics = metrics
        self.host = host
        self.active = False
        self._endpoints: list[Endpoint] = []
        self._probes: Redis | None = None

    async def start(
        self, client: Redis | RedisCluster, health_port: int | None, metrics_port: int | None
    ) -> tuple[int | None, int | None]:
        """Report, and serve the endpoints asked for; returns their ports (a port 0 asked
        for is then the port chosen)."""
        self.active = True
        # Probes and scrapes read Redis on connections of their own (opened on first use).
        self._probes = private_client(client, connections=2)
        self.metrics.attach(self._probes)
        self.health.start(self._probes)
        try:
            if health_port is not None and health_port == metrics_port and health_port != 0:
                self._serve(health_port, with_health=True, with_metrics=True)
            else:
                if health_port is not None:
                    health_port = self._serve(health_port, True, False)
                if metrics_port is not None:
                    metrics_port = self._serve(metrics_port, False, True)
        except BaseException:
            await self.stop()
            raise
        return health_port, metrics_port

    def _serve(self, port: int, with_health: bool, with_metrics: bool) -> int:
        health = self.health if with_health else None
        endpoint = Endpoint(port, health, with_metrics, self.host)
        self._endpoints.append(endpoint)
        served = " and ".join(
            name for name, on in (("health check", with_health), ("metrics", with_metrics)) if on
        )
        where = "" if self.host is None else f" of {self.host}"
        logger.info("Worker %s serves its %s on port %d%s", self.name, served, endpoint.port, where)
        return endpoint.port

    async def stop(self) -> None:
        if not self.active:
            return
        self.active = False
        endpoints, self._endpoints = self._endpoints, []
        for endpoint in endpoints:
            await asyncio.to_thread(endpoint.close)
        self.health.stop()
        self.metrics.detach()
        probes, self._probes = self._probes, None
        if probes is not None:
            await probes.aclose()
