"""Cluster and Sentinel URLs: what they say, what is refused at construction, and that no
password is ever shown (see tests/test_cluster.py and tests/test_sentinel.py for real
servers)."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import SSLConnection
from redis.asyncio.sentinel import SentinelManagedSSLConnection

from shadows import Shadow
from shadows.core.connection import create_client
from shadows.core.urls import parse_deployment, redact_url


def test_a_cluster_url_lists_its_nodes() -> None:
    found = parse_deployment(
        Shadow(url="redis+cluster://app:pw@a:7000,b,[::1]:7002?socket_timeout=3").url
    )
    assert found is not None
    assert found.kind == "cluster"
    assert not found.tls
    assert found.hosts == (("a", 7000), ("b", 6379), ("::1", 7002))
    assert (found.username, found.password) == ("app", "pw")
    assert found.options == {"socket_timeout": 3.0}


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    found = parse_deployment(
        Shadow(
            url="rediss+sentinel://:data%40pw@s1:5000,s2/my%20master/2"
            "?sentinel_password=sentinel-pw&sentinel_username=watcher&ssl_cert_reqs=none"
        ).url
    )
    assert found is not None
    assert found.kind == "sentinel"
    assert found.tls
    assert found.hosts == (("s1", 5000), ("s2", 26379))
    assert (found.service, found.db) == ("my master", 2)
    assert (found.username, found.password) == (None, "data@pw")
    assert found.sentinel_options == {"password": "sentinel-pw", "username": "watcher"}
    assert found.options == {"ssl_cert_reqs": "none"}


def test_the_database_of_a_sentinel_url_defaults_to_zero() -> None:
    found = parse_deployment(Shadow(url="redis+sentinel://s1/mymaster").url)
    assert found is not None
    assert (found.service, found.db) == ("mymaster", 0)


@pytest.mark.parametrize(
    ("url", "normalized"),
    [
        ("valkey+cluster://a:1,b:2", "redis+cluster://a:1,b:2"),
        ("valkeys+cluster://a:1", "rediss+cluster://a:1"),
        ("VALKEY+SENTINEL://a/m", "redis+sentinel://a/m"),
        ("rediss+sentinel://a/m/3", "rediss+sentinel://a/m/3"),
        ("redis+cluster://a:1/0", "redis+cluster://a:1/0"),
    ],
)
def test_valkey_aliases_and_accepted_forms(url: str, normalized: str) -> None:
    assert Shadow(url=url).url == normalized


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+cluster://a:1/1", "only database 0"),
        ("redis+cluster://a:1,,b:2", "each host of the list needs a name"),
        ("redis+cluster://a:x", "must be from 1 to 65535, not 'x'"),
        ("redis+cluster://a:70000", "must be from 1 to 65535"),
        ("redis+cluster://[::1:7000", "malformed IPv6 address"),
        ("redis+cluster://", "each host of the list needs a name"),
        ("redis+cluster://a?frobnicate=1", "unknown option 'frobnicate'"),
        ("redis+cluster://a?socket_timeout=soon", "Invalid value for 'socket_timeout'"),
        ("redis+cluster://a#top", "fragment"),
        ("redis+sentinel://a:26379", "name the master's service"),
        ("redis+sentinel://a/mymaster/zero", "/service_name/db"),
        ("redis+sentinel://a/mymaster/0/extra", "/service_name/db"),
        ("redis+sentinel://a/m?sentinel_frobnicate=1", "unknown option 'sentinel_frobnicate'"),
        ("redis+sentinel://a/m?sentinel_socket_timeout=x", "'sentinel_socket_timeout'"),
        ("redis+sentinel://a/m?db=2", "unknown option 'db'"),
        ("redis+tunnel://a", "the scheme must be one of"),
    ],
)
def test_malformed_cluster_and_sentinel_urls_fail_at_construction(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match="Invalid shadow URL") as raised:
        Shadow(url=url)
    assert problem in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis+cluster://app:s3cret@a:1/5",
        "redis+cluster://app:s3cret@a:1?frobnicate=1",
        "redis+sentinel://:s3cret@a/m?sentinel_password=s3cret&frobnicate=1",
        "redis+sentinel://a?sentinel_password=s3cret",
        "redis://:s3cret@host:notaport",
        "redis://:s3cret@host:6379/notadb",
        "rediss://user:s3cret@host:99999/0",
        "unknown://:s3cret@host",
    ],
)
def test_errors_never_show_a_password(url: str) -> None:
    with pytest.raises(ValueError, match="Invalid shadow URL") as raised:
        Shadow(url=url)
    assert "s3cret" not in str(raised.value)
    assert "***" in str(raised.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3cret@cache:6380/1",
        "redis+cluster://app:s3cret@a:1,b:2",
        "rediss+sentinel://app:s3cret@a,b/mymaster/0?sentinel_password=s3cret",
    ],
)
def test_reprs_never_show_a_password(url: str) -> None:
    shadow = Shadow(url=url)
    assert "s3cret" not in repr(shadow)
    assert "s3cret" not in repr(parse_deployment(shadow.url))


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:hunter2@cache:6380/1", "redis://:***@cache:6380/1"),
        ("redis://localhost:6379/0", "redis://localhost:6379/0"),
        ("redis+cluster://app:hunter2@a:1,b:2/0", "redis+cluster://app:***@a:1,b:2/0"),
        (
            "redis+sentinel://a,b/m/0?sentinel_password=hunter2&socket_timeout=2",
            "redis+sentinel://a,b/m/0?sentinel_password=***&socket_timeout=2",
        ),
        ("redis://:hun/ter@2@cache/0", "redis://:***@cache/0"),
        ("rediss://u:hunter2@h/0?ssl_password=hunter2", "rediss://u:***@h/0?ssl_password=***"),
        ("not a url password=hunter2", "not a url password=***"),
    ],
)
def test_redact_url_hides_every_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_one_server_urls_are_not_deployments() -> None:
    assert parse_deployment("redis://localhost:6379/0") is None
    assert parse_deployment("memory://x") is None


async def test_tls_forms_make_tls_clients() -> None:
    """Without a server: which connections the clients would open."""
    cluster = create_client("rediss+cluster://a:7000,b:7001?ssl_ca_certs=/ca.pem", None)
    settings = cluster.nodes_manager.connection_kwargs  # type: ignore[attr-defined]
    assert issubclass(settings["connection_class"], SSLConnection)
    assert settings["ssl_ca_certs"] == "/ca.pem"
    await cluster.aclose()

    url = "rediss+sentinel://s1,s2/m/0?ssl_ca_certs=/ca.pem&sentinel_ssl_ca_certs=/s.pem"
    master = create_client(url, None)
    pool = master.connection_pool
    assert issubclass(pool.connection_class, SentinelManagedSSLConnection)
    assert pool.connection_kwargs["ssl_ca_certs"] == "/ca.pem"
    for sentinel in pool.sentinel_manager.sentinels:  # type: ignore[attr-defined]
        assert issubclass(sentinel.connection_pool.connection_class, SSLConnection)
        assert sentinel.connection_pool.connection_kwargs["ssl_ca_certs"] == "/s.pem"
    await master.aclose()
