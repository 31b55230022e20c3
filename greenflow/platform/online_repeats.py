"""Repeated online comparisons: the same requests at the same arrival times, served by each
policy in turn, several times, so a live win is told apart from timing noise.

A load test's clicks depend on timing (which window a request lands in, how far λ has
moved, when the guard acts), so one run of GreenFlow against EQUAL can be won by chance.
Each repeat replays the identical schedule for every policy; the summary gives each
policy's clicks per repeat with their mean and range, and for GreenFlow against EQUAL
the paired differences and how many repeats GreenFlow won.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from greenflow.platform.documents import LoadtestDoc, PolicyRepeats, RepeatsSummary

# per-run figures kept for each policy: LoadtestDoc attribute -> summary key
RUN_KEYS = {
    "clicks": "clicks",
    "flops_per_request": "flops_per_request",
    "utilisation_pct": "utilisation_pct",
    "over_budget_windows_pct": "over_budget_windows_pct",
    "errors": "errors",
}


def repeats_summary(runs: Sequence[Mapping[str, LoadtestDoc]]) -> RepeatsSummary:
    """``runs[r][policy]`` is the load-test document of policy in repeat r (every repeat
    the same policies, the same schedule). Clicks are counted clicks (ground truth of the
    run's horizon), FLOPs per answered request, μ and the over-budget share in %."""
    if not runs:
        raise ValueError("no repeats to summarise")
    names = list(runs[0])
    if any(list(r) != names for r in runs):
        raise ValueError("every repeat must run the same policies in the same order")
    policies: dict[str, PolicyRepeats] = {}
    for name in names:
        rows: list[dict[str, Any]] = [
            {**{out: getattr(r[name], key) for key, out in RUN_KEYS.items()},
             "latency_p99_ms": r[name].latency_ms.p99}
            for r in runs
        ]  # fmt: skip
        clicks = [float(row["clicks"]) for row in rows]
        policies[name] = PolicyRepeats(
            runs=tuple(rows),
            clicks_mean=sum(clicks) / len(clicks),
            clicks_min=min(clicks),
            clicks_max=max(clicks),
        )
    if "greenflow" not in policies or "equal" not in policies:
        return RepeatsSummary(repeats=len(runs), policies=policies)
    diffs = tuple(float(r["greenflow"].clicks) - float(r["equal"].clicks) for r in runs)
    return RepeatsSummary(repeats=len(runs), policies=policies,
                          greenflow_minus_equal_clicks=diffs,
                          greenflow_wins=sum(d > 0 for d in diffs))  # fmt: skip


def format_repeats(summary: RepeatsSummary) -> str:
    """One line per policy: clicks of each repeat, mean and range; then the paired wins."""
    lines = [f"clicks over {summary.repeats} repeat(s) of the same schedule:"]
    for name, p in summary.policies.items():
        each = ", ".join(f"{row['clicks']:.0f}" for row in p.runs)
        lines.append(f"  {name:<12} {each}  (mean {p.clicks_mean:.1f}, "
                     f"range {p.clicks_min:.0f}-{p.clicks_max:.0f})")  # fmt: skip
    if summary.greenflow_wins is not None:
        diffs = ", ".join(f"{d:+.0f}" for d in summary.greenflow_minus_equal_clicks or ())
        lines.append(f"  greenflow - equal: {diffs}; greenflow won "
                     f"{summary.greenflow_wins} of {summary.repeats}")  # fmt: skip
    return "\n".join(lines)
