"""The Redis of a chaos run on a cluster (``--cluster``): the test suite's 3 masters and
3 replicas, driven through the interface the fault injector uses for one server.

On a cluster the faults hit the master that serves the shadow's slot (with ``--shards N``,
the master of one of its N shards' slots, drawn at random for each fault):

* ``stop(kill=False)`` (the one-server ``redis_restart_sigterm``): a planned handover,
  ``CLUSTER FAILOVER`` on its replica, which waits for the replica to catch up;
* ``stop(kill=True)`` (``redis_restart_sigkill``): SIGKILL; its replica is promoted
  after ``cluster-node-timeout`` (1 s);
* ``start()``: the killed node comes back and rejoins as a replica of the new master;
* ``pause()``/``resume()``: SIGSTOP/SIGCONT; a pause longer than the node timeout ends
  in a failover too, and the old master comes back as a replica.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

_TESTS = str(Path(__file__).resolve().parents[2] / "tests")
if _TESTS not in sys.path:
    sys.path.append(_TESTS)

from redis_server import RedisProcess, server_binary  # noqa: E402
from redis_topologies import Cluster, role, wait_until  # noqa: E402
from shadows.core.keys import Keys  # noqa: E402


class ClusterTarget:
    """A cluster for the shadow ``name`` (over ``shards`` shards), with the fault
    injector's server interface."""

    def __init__(self, name: str, shards: int = 1, rng: random.Random | None = None) -> None:
        self.cluster = Cluster()
        #: A key of each shard: its master is the one a fault hits.
        self.tags = [Keys(name, i).stream for i in range(shards)]
        self.rng = rng or random.Random(0)
        self.binary = server_binary() or "redis-server"
        self._paused: RedisProcess | None = None
        self._started = False

    @property
    def url(self) -> str:
        return self.cluster.url

    def start(self, timeout: float = 60.0) -> None:
        """The first call starts the cluster; later ones bring killed nodes back."""
        if not self._started:
            self.cluster.start(timeout)
            self._started = True
        else:
            self.cluster.heal(timeout)

    @property
    def tag(self) -> str:
        """A key of the shard the next fault hits."""
        return self.rng.choice(self.tags)

    def stop(self, kill: bool = False) -> None:
        master = self.cluster.master_for(self.tag)
        if kill:
            self.cluster.kill_master(master)
        else:
            self.cluster.failover(master)

    def pause(self) -> None:
        self._paused = self.cluster.master_for(self.tag)
        self._paused.pause()

    def resume(self) -> None:
        paused, self._paused = self._paused, None
        if paused is None:
            return
        paused.resume()
        # a failover may have happened meanwhile: wait until the layout settles again
        # (the old master demoted, or still the master)
        wait_until(lambda: role(paused.port) in ("master", "slave"), 30, "the node to answer")
        self.cluster.wait_stable(30)

    def shutdown(self) -> None:
        self.cluster.stop()
