"""The load-test table: policies side by side, the online analogue of the paper's Table 5."""

from __future__ import annotations

from collections.abc import Mapping

from greenflow.platform.documents import LoadtestDoc


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def format_loadtest_table(docs: Mapping[str, LoadtestDoc]) -> str:
    """Policies side by side: the online analogue of the paper's Table 5 (energy in J,
    carbon in g and the allocator's share of the FLOPs from each doc's ``pfec``)."""
    head = (
        f"{'policy':<14}{'requests':>9}{'errors':>7}{'clicks':>9}{'clicks/req':>11}"
        f"{'FLOPs/req':>11}{'over-budget':>12}{'μ %':>7}{'ν %':>6}{'p50 ms':>8}{'p99 ms':>8}{'energy J':>10}"
        f"{'carbon g':>10}{'alloc FLOPs':>12}"
    )
    lines = [head, "-" * len(head)]
    for name, d in docs.items():
        pfec, lat = d.pfec or {}, d.latency_ms
        pct = d.over_budget_windows_pct
        lines.append(
            f"{name:<14.14}{d.requests:>9d}{d.errors:>7d}{d.clicks:>9.0f}"
            f"{_fmt(d.clicks_per_request, '.3f', 11)}"
            f"{_fmt(d.flops_per_request, '.3g', 11)}"
            f"{_fmt(pct, '.1f', 11)}{'%' if pct is not None else ' '}"
            f"{_fmt(d.utilisation_pct, '.1f', 7)}{_fmt(d.over_utilisation_pct, '.2f', 6)}"
            f"{_fmt(lat.p50, '.1f', 8)}{_fmt(lat.p99, '.1f', 8)}"
            f"{_fmt(pfec.get('energy_j'), '.3g', 10)}{_fmt(pfec.get('carbon_g'), '.3g', 10)}"
            f"{_fmt(_pct(pfec.get('allocator_flops_ratio')), '.2f', 11)}"
            f"{'%' if pfec.get('allocator_flops_ratio') is not None else ' '}"
        )
    return "\n".join(lines)


def _pct(ratio: float | None) -> float | None:
    return None if ratio is None else 100.0 * ratio
