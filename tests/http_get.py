"""Plain HTTP GETs against a worker's endpoints, as a probe or a scraper would make them."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def get(url: str, accept: str | None = None, timeout: float = 5) -> tuple[int, str, str]:
    """``(status, content type, body)``, for error statuses too."""
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


async def health(port: int) -> tuple[int, dict[str, Any]]:
    """The health check's status and JSON body, fetched from another thread."""
    status, content_type, body = await asyncio.to_thread(get, f"http://127.0.0.1:{port}/")
    assert content_type == "application/json"
    return status, json.loads(body)


async def scrape(port: int, path: str = "/metrics") -> dict[tuple[str, frozenset[Any]], float]:
    """Every sample of the metrics endpoint, by (sample name, labels)."""
    status, _, body = await asyncio.to_thread(get, f"http://127.0.0.1:{port}{path}")
    assert status == 200, body
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(body)
        for sample in family.samples
    }


def families(body: str) -> dict[str, str]:
    """Metric family name to type, as the ``# TYPE`` lines declare them."""
    return {family.name: family.type for family in text_string_to_metric_families(body)}
