"""Real servers configured with a password, ACL users and TLS."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from redis.asyncio import ConnectionPool
from redis.exceptions import AuthenticationError, ResponseError

from redis_server import RedisProcess, free_port
from shadows import Shadow, Worker

ran: list[str] = []


async def note(label: str) -> None:
    ran.append(label)


@pytest.fixture(autouse=True)
def clear_ran() -> None:
    ran.clear()


async def round_trip(url: str, name: str = "secured") -> None:
    async with Shadow(name=name, url=url) as shadow:
        await shadow.add(note)("hello")
        async with Worker(shadow) as worker:
            await asyncio.wait_for(worker.run_until_finished(), 20)
    assert ran == ["hello"]


async def test_a_password_in_the_url() -> None:
    with RedisProcess(extra_args=["--requirepass", "pa55word"]) as server:
        await round_trip(f"redis://:pa55word@127.0.0.1:{server.port}/0")
        async with Shadow(url=f"redis://:wrong@127.0.0.1:{server.port}/0") as shadow:
            with pytest.raises((AuthenticationError, ResponseError)):
                await shadow.add(note)("never")


async def test_a_restricted_acl_user(tmp_path: Path) -> None:
    """A user allowed only what shadows needs (no admin or dangerous commands: the worker
    does without CLIENT UNBLOCK) and only the keys of its own shadow."""
    acl = tmp_path / "users.acl"
    acl.write_text(
        "user default off\n"
        "user admin on >admin-pw ~* &* +@all\n"
        "user shadows on >worker-pw ~{secured}:* resetchannels "
        "+@read +@write +@stream +@scripting +@connection +@keyspace -@dangerous +client|id "
        "+time\n"
    )
    with RedisProcess(extra_args=["--aclfile", str(acl)]) as server:
        await round_trip(f"redis://shadows:worker-pw@127.0.0.1:{server.port}/0")
        # the same user cannot touch another shadow's keys
        async with Shadow(
            name="elsewhere", url=f"redis://shadows:worker-pw@127.0.0.1:{server.port}/0"
        ) as other:
            with pytest.raises(ResponseError, match="no permissions"):
                await other.add(note)("denied")


async def test_tls(tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")  # a test dependency; present in CI
    authority = trustme.CA()
    certificate = authority.issue_cert("127.0.0.1", "localhost")
    ca_file = tmp_path / "ca.pem"
    cert_file = tmp_path / "server.pem"
    key_file = tmp_path / "server.key"
    authority.cert_pem.write_to_path(str(ca_file))
    certificate.cert_chain_pems[0].write_to_path(str(cert_file))
    certificate.private_key_pem.write_to_path(str(key_file))
    tls_port = free_port()
    with RedisProcess(
        extra_args=[
            "--tls-port", str(tls_port),
            "--tls-cert-file", str(cert_file),
            "--tls-key-file", str(key_file),
            "--tls-ca-cert-file", str(ca_file),
            "--tls-auth-clients", "no",
        ]
    ):  # fmt: skip
        await round_trip(f"rediss://127.0.0.1:{tls_port}/0?ssl_ca_certs={ca_file}")
        ran.clear()
        await round_trip(f"valkeys://localhost:{tls_port}/0?ssl_ca_certs={ca_file}")
        # an untrusted certificate is refused
        async with Shadow(url=f"rediss://127.0.0.1:{tls_port}/0") as shadow:
            with pytest.raises(Exception, match="certificate verify failed"):
                await shadow.add(note)("never")


async def test_a_unix_socket(tmp_path: Path) -> None:
    socket_path = tmp_path / "redis.sock"
    with RedisProcess(extra_args=["--unixsocket", str(socket_path), "--unixsocketperm", "700"]):
        await round_trip(f"unix://{socket_path}?db=2")


async def test_a_decoding_url_or_pool_is_refused_at_once(redis_url: str) -> None:
    """Replies must stay bytes (task arguments are binary): decode_responses is refused
    before anything is written, with the reason."""
    with pytest.raises(ValueError, match="cannot use decode_responses=True: remove that option"):
        Shadow(url="redis://localhost:6379/0?decode_responses=True")
    Shadow(url="redis://localhost:6379/0?decode_responses=no")  # explicitly off is fine

    pool = ConnectionPool.from_url(redis_url, decode_responses=True)
    shadow = Shadow(name="decoding", connection_pool=pool)
    with pytest.raises(ValueError, match=r"Shadow\(connection_pool=...\) has shadows reads"):
        async with shadow:
            pass
    with pytest.raises(ValueError, match="decode_responses"):  # never half open
        shadow.client  # noqa: B018
    await pool.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:99999/0",
        "redis://app:hunter2@127.0.0.1:6379/zero",
        "rediss://127.0.0.1:port/0?password=hunter2",
        "redis://:hunter2@127.0.0.1/0?decode_responses=1",
        "unix://:hunter2@?password=hunter2",
    ],
)
def test_a_bad_url_is_reported_without_its_password(url: str) -> None:
    with pytest.raises(ValueError, match="Invalid shadow URL") as raised:
        Shadow(url=url)
    assert "hunter2" not in str(raised.value)
    assert "***" in str(raised.value)


def test_repr_hides_passwords() -> None:
    shadow = Shadow(name="hidden", url="redis://app:hunter2@cache:6380/1?password=hunter2")
    assert repr(shadow) == "Shadow(name='hidden', url='redis://app:***@cache:6380/1?password=***')"
    assert "hunter2" in shadow.url  # still usable, only never shown


async def test_a_wrong_password_shows_in_no_log_line_nor_health_body(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from datetime import timedelta

    from conftest import wait_for
    from http_get import health

    with RedisProcess(extra_args=["--requirepass", "pa55word"]) as server:
        url = f"redis://:hunter2@127.0.0.1:{server.port}/0?password=hunter2"
        async with (
            Shadow(name="locked", url=url) as shadow,
            Worker(
                shadow, healthcheck_port=0, reconnection_delay=timedelta(milliseconds=100)
            ) as worker,
        ):
            with caplog.at_level(logging.DEBUG):
                task = asyncio.create_task(worker.run_forever())
                bodies: list[dict[str, object]] = []

                async def refused() -> bool:
                    status, body = await health(worker.healthcheck_port or 0)
                    bodies.append(body)
                    return status == 503 and "Redis" in str(body.get("reason"))

                await wait_for(refused, message="the health check to report Redis")
                await wait_for(lambda: "Redis unavailable" in caplog.text)
                worker.stop()
                await task
    assert "invalid username-password pair" in str(bodies[-1]) + caplog.text
    assert "hunter2" not in caplog.text
    assert "hunter2" not in str(bodies)
