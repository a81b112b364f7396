"""The report of a chaos run: a Markdown table (printed, and written as ``.md``) and the
full figures as JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: How many examples of each violation the Markdown report lists.
EXAMPLES = 15


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{kind} {n}" for kind, n in sorted(counts.items())) or "none"


def _rate(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "n/a"
    return (
        f"limit {figures['limit']} per {figures['per_seconds']:g} s, most starts in any "
        f"window: {figures['most_in_window']}"
    )


def _debounce(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "n/a"
    capped = figures.get("capped_by_max_wait")
    return (
        f"{figures['submissions']} submissions in {figures['bursts']} bursts, one run "
        f"each, due within max_wait {figures['max_wait_seconds']:g} s"
        + (f" ({capped} bursts cut by max_wait)" if capped is not None else "")
    )


def render(report: dict[str, Any]) -> str:
    """The report as Markdown (readable as plain text too)."""
    config = report["config"]
    tasks = report["tasks"]
    duplicates = report["duplicates"]
    resume = report["resume"]
    recovery = report["recovery_after_sigkill"]
    state = report["end_state"]
    timeout = config["socket_timeout"]
    rows = [
        ("Verdict", "PASS" if report["passed"] else "FAIL"),
        ("Run", f"{report['label']}, seed {config['seed']}, commit {config.get('commit', '?')}, "
                f"{config['workers']} workers x "
                f"{config['concurrency']}, {report['timeline']['fault_phase_seconds']:g} s of "
                f"faults, {report['timeline']['total_seconds']:g} s in all"),
        ("Settings", f"redelivery timeout {config['redelivery_timeout']:g} s, reconnection "
                     f"delay {config['reconnection_delay']:g} s, socket timeout "
                     f"{timeout if isinstance(timeout, str) else f'{timeout:g} s (URL option)'}"),
        ("Tasks accepted", f"{tasks['accepted_total']} ({_counts(tasks['accepted'])})"),
        ("Adds rejected (Redis away)", f"{tasks['rejected_total']}, of which "
                                       f"{tasks['rejected_but_ran']} reached Redis and ran"),
        ("Runs", f"{tasks['runs']} of {tasks['executions']} executions "
                 f"({_counts(tasks['runs_by_outcome'])})"),
        ("Faults injected", f"{report['faults_total']} ({_counts(report['faults'])})"),
        ("Duplicates (re-runs)", f"{duplicates['reruns']}: {duplicates['after_interruption']} "
                                 f"after an interrupted run, "
                                 f"{duplicates['duplicate_completions']} after a finished one"),
        ("Runs fenced or cancelled", str(duplicates["runs_cancelled_by_fencing_or_stop"])),
        ("Runs cut by SIGKILL", str(duplicates["runs_cut_by_sigkill"])),
        ("Overlaps in a failover's lost-write window (allowed)",
         "; ".join(duplicates.get("failover_overlaps", [])) or "0"),
        ("Lost", str(report["lost"])),
        ("Cancelled while running", _cancellations(report["cancellations"])),
        ("Resume after Redis restart", _resume(resume, "redis_restart")),
        ("Resume after Redis pause", _resume(resume, "redis_pause")),
        ("Recovery after worker SIGKILL", _recovery(recovery, "worker_sigkill")),
        ("Recovery after a restart under the same name",
         _recovery(recovery, "worker_restart_same_name")),
        ("Poison tasks", _poison(report.get("poison"))),
        ("Worker exit after SIGTERM", f"max {_seconds(report['sigterm_exit_seconds_max'])}"),
        ("Perpetual chains", ", ".join(
            f"{key} {runs} runs (max gap {report['chains']['max_gap_seconds'][key]:.1f} s)"
            for key, runs in report["chains"]["runs"].items())),
        ("Concurrency limit", f"limit 1, most at once per customer: "
                              f"{_counts(report['concurrency_max'])}"),
        ("Rate limit", _rate(report.get("rate_limit"))),
        ("Debounce", _debounce(report.get("debounce"))),
        ("End state", f"stream {state['stream_length']}, queue {state['queue_length']}, pending "
                      f"{state['pending']}, {state['keys']} keys ({_counts(state['keys_by_kind'])})"
                      f", {len(state['without_expiry'])} without expiry, "
                      f"{len(state['dead_letters'])} dead letters, "
                      f"{state['consumers_left']} consumers left in the group"),
    ]  # fmt: skip
    lines = ["| Figure | Value |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in rows]
    for name, items in report["violations"].items():
        if items:
            lines += ["", f"**{name}** ({len(items)}):", ""]
            lines += [f"- {item}" for item in items[:EXAMPLES]]
            if len(items) > EXAMPLES:
                lines.append(f"- ... and {len(items) - EXAMPLES} more (see the JSON report)")
    return "\n".join(lines)


def _poison(figures: dict[str, Any] | None) -> str:
    if not figures:
        return "n/a"
    runs = figures["runs"].values()
    return (
        f"{figures['tasks']} added, each dead-lettered after {min(runs, default=0)}-"
        f"{max(runs, default=0)} runs (limit {figures['max_deliveries']}), "
        f"{figures['workers_killed']} workers killed by them"
    )


def _resume(resume: dict[str, Any], kind: str) -> str:
    values = [
        r["resume_seconds"] for r in resume["each"]
        if r["kind"].startswith(kind) and r["resume_seconds"] is not None
    ]  # fmt: skip
    if not values:
        return "n/a"
    each = ", ".join(f"{v:.2f}" for v in values)
    return f"max {max(values):.2f} s (each: {each}; target < {resume['target_seconds']:g} s)"


def _recovery(recovery: dict[str, Any], kind: str) -> str:
    """How soon the runs that faults of ``kind`` cut started again (from the kill)."""
    each = [r for r in recovery["each"] if r.get("kind", "worker_sigkill") == kind]
    if not each:
        return "n/a (no run was cut)"
    never = sum(1 for r in each if r["recovery_seconds"] is None)
    values = sorted(r["recovery_seconds"] for r in each if r["recovery_seconds"] is not None)
    if not values:
        return f"{never} run(s) never started again"
    text = (
        f"max {values[-1]:.2f} s, median {values[len(values) // 2]:.2f} s over "
        f"{len(values)} run(s) (target < {recovery['target_seconds']:g} s)"
    )
    return text + (f"; {never} never started again" if never else "")


def write_report(
    report: dict[str, Any], directory: Path, results: Path | None, name: str
) -> list[Path]:
    """Write ``report.json`` and ``report.md`` into the run directory, and copies named
    ``name`` into ``results`` (when given)."""
    text = f"# Chaos run {name}\n\n{render(report)}\n"
    body = json.dumps(report, indent=2, default=str) + "\n"
    written = []
    targets = [(directory, "report")]
    if results is not None:
        results.mkdir(parents=True, exist_ok=True)
        targets.append((results, name))
    for folder, stem in targets:
        (folder / f"{stem}.json").write_text(body)
        (folder / f"{stem}.md").write_text(text)
        written += [folder / f"{stem}.json", folder / f"{stem}.md"]
    return written


def _cancellations(figures: dict[str, int]) -> str:
    return (
        f"{figures['took_effect']} cancellations took effect, "
        f"{figures['stopped_while_running']} runs stopped by them"
    )
