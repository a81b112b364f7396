"""Flood an HTTP port with concurrent GETs, from a process of its own (so that the flood
does not share the tested process's interpreter), and print what came back as JSON.

    python http_flood.py PORT CONNECTIONS SECONDS
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter


async def _client(port: int, answers: Counter[str], slowest: list[float], until: float) -> None:
    while time.monotonic() < until:
        sent = time.monotonic()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(b"GET / HTTP/1.0\r\nHost: probe\r\n\r\n")
            await writer.drain()
            status = (await asyncio.wait_for(reader.readline(), 10)).split(b" ")
            answers[status[1].decode() if len(status) > 1 else "no answer"] += 1
            writer.close()
        except (OSError, TimeoutError) as error:
            answers[type(error).__name__] += 1
        slowest[0] = max(slowest[0], time.monotonic() - sent)


async def flood(port: int, connections: int, seconds: float) -> dict[str, object]:
    answers: Counter[str] = Counter()
    slowest = [0.0]
    until = time.monotonic() + seconds
    await asyncio.gather(*(_client(port, answers, slowest, until) for _ in range(connections)))
    return {"answers": dict(answers), "slowest": round(slowest[0], 3)}


if __name__ == "__main__":
    port, connections, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(flood(port, connections, seconds))))
