"""The chaos suite (``scripts/chaos/``): its verifier on hand-made records, and a short real run.

The short run (about 70 s) starts a persistent redis-server and three worker processes,
then kills, stops and restarts workers and restarts and pauses Redis for ~55 s while a
producer adds tasks; it must lose nothing. The long run is ``python scripts/chaos --duration
10m`` (see docs/reliability-chaos.md).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))

from chaos.report import render
from chaos.run import run_chaos, short
from chaos.verify import HEARTBEAT_KEY, Run, most_at_once, overlapping, verify
from redis_topologies import missing_binaries

# -- the verifier, on records written by hand ----------------------------------------------


class Records:
    """Writes the files of a chaos run directory the way the suite's parts do."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        (directory / "runs").mkdir(parents=True)
        self._runs = 0

    def _append(self, name: str, record: dict[str, Any]) -> None:
        with open(self.directory / name, "a") as file:
            file.write(json.dumps(record) + "\n")

    def accepted(self, kind: str, key: str, when: float = 0.0, **facts: Any) -> None:
        marker = facts.pop("marker", key)
        record = {"kind": kind, "marker": marker, "k": key, "w": when, "t": when, **facts}
        self._append("accepted.jsonl", record)

    def rejected(self, kind: str, marker: str) -> None:
        self._append("rejected.jsonl", {"kind": kind, "marker": marker, "t": 0.0})

    def run(
        self,
        key: str,
        start: float,
        end: float | None,
        outcome: str = "ok",
        pid: int = 100,
        attempt: int = 1,
        when: float = 0.0,
        **extra: Any,
    ) -> None:
        self._runs += 1
        run = f"run{self._runs}"
        stopped = extra.pop("stopped", False)
        self._append(
            f"runs/{pid}.jsonl",
            {"e": "start", "r": run, "k": key, "f": "work", "a": attempt, "w": when,
             "p": pid, "n": f"w-{pid}", "t": start, **extra},
        )  # fmt: skip
        if end is not None:
            record = {"e": "end", "r": run, "k": key, "p": pid, "t": end, "o": outcome}
            if stopped:
                record["stopped"] = True
            self._append(f"runs/{pid}.jsonl", record)

    def cancelled(self, key: str, at: float, done: bool = True) -> None:
        self._append("cancelled.jsonl", {"k": key, "sent": at - 0.01, "t": at, "cancelled": done})

    def exit(self, pid: int, at: float, how: str = "sigkill", returncode: int = -9) -> None:
        self._append(
            "processes.jsonl",
            {"event": "exit", "slot": 0, "name": f"w-{pid}", "pid": pid, "how": how,
             "sent": at - 0.1, "t": at, "returncode": returncode},
        )  # fmt: skip

    def fault(self, kind: str, t0: float, ready: float) -> None:
        """A Redis fault from ``t0``, its server answering again at ``ready``."""
        self._append("faults.jsonl", {"kind": kind, "t0": t0, "ready": ready, "t1": ready})

    def heartbeat(self) -> None:
        """The automatic chain every real run has: runs in the quiet phase, then stops."""
        self.run(HEARTBEAT_KEY, 50.0, 50.1, pid=1)
        self.run(HEARTBEAT_KEY, 61.0, 61.1, pid=1, when=61.0, stopped=True)


@pytest.fixture
def records(tmp_path: Path) -> Records:
    made = Records(tmp_path)
    made.heartbeat()
    return made


def check(records: Records) -> Any:
    return verify(records.directory, faults_ended=40.0, stop_requested=60.0, limit=1)


def test_a_clean_record_passes(records: Records) -> None:
    records.accepted("immediate", "a", when=1.0)
    records.run("a", 1.5, 2.0)
    records.accepted("retry", "r", when=1.0, fail_until=1)
    records.run("r", 1.2, 1.3, outcome="failed")
    records.run("r", 1.6, 1.7, attempt=2, when=1.5)
    verdict = check(records)
    assert verdict.ok, verdict.violations
    assert verdict.lost == [] and verdict.reruns == 0 and verdict.executions == 5


def test_a_task_without_a_successful_run_is_lost(records: Records) -> None:
    records.accepted("immediate", "never")
    records.accepted("future", "cancelled-only", when=5.0)
    records.run("cancelled-only", 5.0, 5.5, outcome="cancelled")
    records.accepted("retry", "short-of-tries", fail_until=2)
    records.run("short-of-tries", 1.0, 1.1, outcome="failed")
    records.run("short-of-tries", 2.0, 2.1, outcome="failed", attempt=2)
    verdict = check(records)
    assert len(verdict.lost) == 3
    assert not verdict.ok


def test_runs_before_their_time_are_early(records: Records) -> None:
    records.accepted("future", "soon", when=10.0)
    records.run("soon", 9.5, 9.6, when=10.0)
    records.accepted("future", "just-in-time", when=10.0)
    records.run("just-in-time", 9.9995, 10.1, when=9.9995)  # within the ms granularity
    verdict = check(records)
    assert len(verdict.early) == 2  # before its own due time, and before the time added for
    assert all("soon" in line for line in verdict.early)


def test_overlapping_runs_of_one_key_are_found_also_through_a_killed_worker(
    records: Records,
) -> None:
    records.accepted("long", "twice")
    records.run("twice", 1.0, None, pid=7)  # its worker was killed at 4.0
    records.exit(7, 4.0)
    records.run("twice", 3.5, 5.0, pid=8)
    records.accepted("long", "in-turn")
    records.run("in-turn", 1.0, None, pid=9)
    records.exit(9, 2.0)
    records.run("in-turn", 4.0, 5.0, pid=10)
    verdict = check(records)
    assert len(verdict.overlaps) == 1 and "twice" in verdict.overlaps[0]
    assert verdict.reruns == 2 and verdict.reruns_after_interruption == 2
    assert verdict.killed_runs == 2


def test_the_recovery_after_a_worker_sigkill_is_measured_from_the_kill(
    records: Records,
) -> None:
    records.accepted("long", "cut")
    records.run("cut", 1.0, None, pid=7)
    records.exit(7, 4.0)
    records.run("cut", 5.5, 6.0, pid=8)
    records.accepted("long", "never")
    records.run("never", 2.0, None, pid=7)
    with open(records.directory / "faults.jsonl", "a") as file:
        fault = {"kind": "worker_sigkill", "t0": 3.9, "t1": 4.0, "pid": 7, "fresh_name": True}
        file.write(json.dumps(fault) + "\n")
    verdict = check(records)
    assert sorted(verdict.recovery, key=lambda r: r["key"]) == [
        {
            "kind": "worker_sigkill",
            "key": "cut",
            "killed": 3.9,
            "same_name": False,
            "recovery_seconds": 1.6,
        },
        {
            "kind": "worker_sigkill",
            "key": "never",
            "killed": 3.9,
            "same_name": False,
            "recovery_seconds": None,
        },
    ]


def test_runs_after_a_cancellation_took_effect_are_violations(records: Records) -> None:
    records.accepted("cancel", "c1", when=1.0)
    records.run("c1", 1.5, 3.2, outcome="cancelled")  # the run the cancellation stopped
    records.cancelled("c1", at=3.0)
    records.accepted("cancel", "c2", when=1.0)
    records.run("c2", 1.5, 3.1, outcome="cancelled")
    records.cancelled("c2", at=3.0)
    records.run("c2", 3.4, 3.5, attempt=2)  # a retry placed after the cancellation
    records.accepted("cancel", "c3", when=1.0)
    records.cancelled("c3", at=3.0)
    records.run("c3", 3.2, 3.3, outcome="cancelled")  # read before, started just after
    records.run("c3", 9.0, 9.1, pid=101)  # redelivered long after
    records.accepted("cancel", "c4", when=1.0)
    records.cancelled("c4", at=3.0, done=False)  # had ended: nothing to check
    records.run("c4", 5.0, 5.1, attempt=2)
    verdict = check(records)
    assert verdict.cancellations == 3
    assert verdict.cancelled_while_running == 3
    assert len(verdict.after_cancel) == 2
    assert "c2 attempt=2" in verdict.after_cancel[0]
    assert "c3 attempt=1" in verdict.after_cancel[1]
    assert "6.000 s after its cancellation took effect" in verdict.after_cancel[1]


def test_a_second_finished_run_counts_as_a_duplicate_not_a_violation(records: Records) -> None:
    records.accepted("immediate", "again")
    records.run("again", 1.0, 1.2, pid=1)
    records.run("again", 4.0, 4.2, pid=2)
    verdict = check(records)
    assert verdict.ok, verdict.violations
    assert verdict.reruns == 1 and verdict.duplicate_completions == 1


def test_concurrency_limit_per_customer(records: Records) -> None:
    for key, start, end, customer in [
        ("l1", 1.0, 2.0, "alice"),
        ("l2", 1.5, 2.5, "alice"),
        ("l3", 1.5, 2.5, "bob"),
        ("l4", 2.5, 3.0, "bob"),
    ]:
        records.accepted("limited", key)
        records.run(key, start, end, c=customer)
    verdict = check(records)
    assert verdict.max_concurrency == {"alice": 2, "bob": 1}
    assert len(verdict.concurrency) == 1 and "alice" in verdict.concurrency[0]


def test_more_starts_than_the_rate_limit_allows_in_a_window(records: Records) -> None:
    facts = {"limit": 2, "per": 2.0}
    for key, start in [("r1", 1.0), ("r2", 1.5), ("r3", 3.3), ("r4", 3.6), ("r5", 5.5)]:
        records.accepted("rated", key, **facts)
        records.run(key, start, start + 0.05, rl=1)
    records.run("r2", 1.9, 2.0, pid=5, rl=1)  # a redelivery of r2: counted once
    verdict = check(records)
    assert verdict.ok, {name: found for name, found in verdict.violations.items() if found}
    assert verdict.rate_most_in_window == 2
    records.accepted("rated", "r6", **facts)
    records.run("r6", 3.7, 3.8, rl=1)  # r3, r4 and r6 within 0.4 s
    verdict = check(records)
    assert verdict.rate_most_in_window == 3
    assert len(verdict.rate_limit) == 1 and "limit 2 per 2 s" in verdict.rate_limit[0]


def test_one_run_per_debounce_burst_within_max_wait_with_the_last_arguments(
    records: Records,
) -> None:
    def burst(key: str, sent: list[float], first: int = 0) -> None:
        for sequence, moment in enumerate(sent, start=first):
            records.accepted(
                "debounced", key, when=moment, marker=f"{key}:{sequence}", sent=moment,
                burst=key, sequence=sequence, settle=0.25, max_wait=0.5,
            )  # fmt: skip

    burst("good", [1.0, 1.1, 1.2])
    records.run("good", 1.5, 1.6, when=1.45, m="good:2", s=2)
    records.run("good", 1.7, 1.8, pid=5, when=1.45, m="good:2", s=2)  # redelivered
    # a stream of submissions 0.12 s apart, cut by max_wait into two bursts (two keys)
    burst("stream-a", [6.0, 6.12, 6.24, 6.36, 6.48])
    records.run("stream-a", 6.55, 6.6, when=6.5, m="stream-a:4", s=4)
    burst("stream-b", [6.6, 6.72], first=5)
    records.run("stream-b", 7.0, 7.1, when=6.97, m="stream-b:6", s=6)
    verdict = check(records)
    assert verdict.ok, verdict.violations
    assert (verdict.debounce_bursts, verdict.debounce_submissions) == (3, 10)
    assert verdict.debounce_capped == 1  # stream-a: due at max_wait, not settle after

    burst("twice", [2.0, 2.1])
    records.run("twice", 2.4, 2.5, when=2.35, m="twice:1", s=1)
    records.run("twice", 2.6, 2.7, when=2.45, m="twice:1", s=1)
    burst("late", [3.0, 3.1])
    records.run("late", 3.7, 3.8, when=3.6, m="late:1", s=1)  # due 0.6 s after the first
    burst("first-kept", [4.0, 4.1])
    records.run("first-kept", 4.4, 4.5, when=4.35, m="first-kept:0", s=0)
    burst("never", [5.0])
    verdict = check(records)
    found = verdict.debounce
    assert len(found) == 3, found
    assert any(line.startswith("twice: 2 runs for one burst") for line in found)
    assert any("first-kept" in line and "not the last accepted (1)" in line for line in found)
    assert any("[late" in line and "(max_wait 0.5 s)" in line for line in found)
    assert verdict.debounce_capped == 1  # none of these went on past max_wait
    assert verdict.lost == ["debounced never: no successful run"]


def test_an_idempotent_add_that_ran_is_reported(records: Records) -> None:
    records.accepted("keyed", "k", when=10.0)
    records.run("k", 10.0, 10.1, when=10.0, m="k")
    records._append(
        "accepted.jsonl",
        {"kind": "keyed-again", "marker": "k-dup", "k": "k", "w": 10.0, "t": 8.0,
         "first_when": 10.0},
    )  # fmt: skip
    records.run("k", 12.0, 12.1, when=10.0, m="k-dup")
    verdict = check(records)
    assert len(verdict.idempotency) == 1


def test_runs_of_rejected_adds_are_counted_and_unknown_runs_flagged(records: Records) -> None:
    records.rejected("retry", "retry-9")
    records.run("retry-9", 1.0, 1.1)
    records.run("nobody-added-me", 1.0, 1.1)
    verdict = check(records)
    assert verdict.rejected_but_ran == 1
    assert len(verdict.unknown_runs) == 1 and "nobody-added-me" in verdict.unknown_runs[0]


def test_sigterm_must_finish_running_tasks_and_exit_0(records: Records) -> None:
    records.accepted("long", "cut")
    records.run("cut", 1.0, None, pid=5)
    records.exit(5, 3.0, how="sigterm", returncode=0)
    records.run("cut", 5.0, 6.0, pid=6)
    records.exit(6, 9.0, how="sigterm", returncode=1)
    records.exit(11, 70.0, how="sigterm-timeout")
    verdict = check(records)
    assert len(verdict.unfinished) == 1
    assert len(verdict.sigterm) == 2


def test_a_worker_that_exits_on_its_own_is_reported(records: Records) -> None:
    records.exit(12, 30.0, how="died", returncode=1)
    verdict = check(records)
    assert len(verdict.died) == 1 and "exited on its own with code 1" in verdict.died[0]
    assert not verdict.ok


def test_workers_killed_by_a_poison_task_are_no_finding_within_the_delivery_limit(
    records: Records,
) -> None:
    records.accepted("poison", "poison-1")
    for pid in (20, 21, 22):  # each run kills its worker, restarted under its name
        records.run("poison-1", float(pid), None, pid=pid, f="poison")
        records.exit(pid, pid + 0.1, how="died", returncode=137)
    verdict = verify(records.directory, 40.0, 60.0, limit=1, max_deliveries=3)
    assert verdict.died == [] and verdict.poison == []
    assert verdict.poison_kills == 3 and verdict.poison_runs == {"poison-1": 3}
    assert verdict.ok
    # one more (an uncounted delivery, seen once, unexplained) is accepted, two are a finding
    assert verify(records.directory, 40.0, 60.0, limit=1, max_deliveries=2).ok
    verdict = verify(records.directory, 40.0, 60.0, limit=1, max_deliveries=1)
    assert len(verdict.poison) == 1 and "delivery limit (1) allows" in verdict.poison[0]
    assert not verdict.ok


def test_an_overlap_in_a_failovers_lost_write_window_is_reported_not_a_violation(
    records: Records,
) -> None:
    """On a cluster, a master paused past the node timeout acts as one once resumed until
    it hears of its replica's promotion: a run started from it can overlap the new
    master's run of the same task. Inside such a window the overlap is reported apart;
    outside, it is a violation."""
    records.accepted("immediate", "twice")
    records.run("twice", 10.0, 10.5, pid=20)
    records.run("twice", 10.2, 10.7, pid=21)
    records.fault("redis_pause_long", 8.0, 8.5)  # its window: 8.0 to 10.5 s
    lossy = ["redis_pause_long"]
    verdict = verify(records.directory, 40.0, 60.0, limit=1, failover_kinds=lossy)
    assert verdict.overlaps == [] and len(verdict.failover_overlaps) == 1
    verdict = verify(records.directory, 40.0, 60.0, limit=1, failover_kinds=[])
    assert len(verdict.overlaps) == 1 and not verdict.ok


def test_a_perpetual_chain_must_run_after_the_faults_and_reach_its_stop(tmp_path: Path) -> None:
    records = Records(tmp_path)
    records.run(HEARTBEAT_KEY, 10.0, 10.1)  # only during the faults, never stopped
    records.accepted("perpetual", "chain-0")
    records.run("chain-0", 1.0, 1.1, when=1.0)
    records.run("chain-0", 45.0, 45.1, when=45.0)
    records.run("chain-0", 62.0, 62.1, when=62.0, stopped=True)
    verdict = check(records)
    assert verdict.chains == [
        f"{HEARTBEAT_KEY}: no run between the last fault and the stop request"
    ]
    assert verdict.lost == [f"perpetual {HEARTBEAT_KEY}: the chain never reached its stop"]
    assert verdict.chain_runs["chain-0"] == 3 and verdict.chain_max_gap["chain-0"] == 44.0


def _run(start: float, until: float) -> Run:
    return Run("r", "k", "work", 1, 0.0, 1, "w", start, until=until)


def test_interval_helpers() -> None:
    runs = [_run(0, 1), _run(1, 2), _run(0.5, 0.7), _run(3, 4)]
    assert [(a.start, b.start) for a, b in overlapping(runs)] == [(0, 0.5)]
    assert most_at_once(runs) == 2  # touching intervals do not overlap
    assert most_at_once([_run(0, 5), _run(1, 2), _run(1.5, 3)]) == 3


# -- a short real run ---------------------------------------------------------------------


def assert_flow_control_exercised(report: dict[str, Any], table: str) -> None:
    """The flow control of issue 13 was exercised, not only left unviolated: running tasks
    cancelled, the rate limit reached, bursts collapsed, some of them cut by max_wait."""
    assert report["cancellations"]["stopped_while_running"] >= 1, table
    assert report["rate_limit"]["most_in_window"] == report["rate_limit"]["limit"], table
    debounce = report["debounce"]
    assert debounce["submissions"] > debounce["bursts"] >= 1, table
    assert debounce["capped_by_max_wait"] >= 1, table


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED", "2026"))
    config = short(seed=seed, directory=tmp_path, results=None)
    outcome = await run_chaos(config)
    report = outcome.report
    table = render(report)
    print(f"\nchaos run (seed {seed}, records in {outcome.directory}):\n{table}")
    assert report["lost"] == 0, table
    assert report["passed"], table
    # every kind of fault happened, and work was done meanwhile
    assert set(report["faults"]) >= {
        "worker_sigkill", "worker_sigterm", "redis_restart_sigterm", "redis_restart_sigkill",
        "redis_pause_long", "redis_pause_short", "worker_restart_same_name", "poison_task",
    }, table  # fmt: skip
    # each poison task was dead-lettered after killing at most max_deliveries workers
    poison = report["poison"]
    assert poison["tasks"] >= 1 and poison["workers_killed"] >= 1, table
    assert report["tasks"]["accepted_total"] > 300, table
    assert_flow_control_exercised(report, table)
    state = report["end_state"]
    assert (state["stream_length"], state["queue_length"], state["pending"]) == (0, 0, 0), table
    assert state["without_expiry"] == [], table


@pytest.mark.slow
@pytest.mark.timeout(420)
async def test_short_chaos_run_on_a_cluster_loses_nothing(tmp_path: Path) -> None:
    """``python scripts/chaos --cluster``: Redis faults hit the master of the shadow's
    slot (a planned ``CLUSTER FAILOVER``, a SIGKILL and its replica's promotion, pauses
    that end in failovers) while workers are killed and stopped."""
    missing = missing_binaries()
    if missing:
        pytest.skip(missing)
    seed = int(os.environ.get("CHAOS_SEED", "2026"))
    config = short(seed=seed, directory=tmp_path, results=None, cluster=True, label="short-cluster")
    outcome = await run_chaos(config)
    report = outcome.report
    table = render(report)
    print(f"\nchaos run on a cluster (seed {seed}, in {outcome.directory}):\n{table}")
    assert report["lost"] == 0, table
    assert report["passed"], table
    redis_faults = {kind for kind in report["faults"] if kind.startswith("redis_")}
    assert {"redis_restart_sigterm", "redis_restart_sigkill"} <= redis_faults, table
    assert_flow_control_exercised(report, table)
    state = report["end_state"]
    assert (state["stream_length"], state["queue_length"], state["pending"]) == (0, 0, 0), table
