"""The load-test figure: the paper's Figure 5 analogue (``loadtest.png``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from greenflow.platform.documents import LoadtestDoc, Window
from greenflow.platform.run_dir import LOADTEST_PNG, RunDir
from greenflow.platform.traffic import TrafficProfile


def plot_loadtest(docs: Mapping[str, LoadtestDoc], run_dir: RunDir) -> str:
    """The paper's Figure 5 analogue: spend per window against the budget, λ, and the
    request rate, over time, the spike shaded. Writes ``loadtest.png``; returns where."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_spend, ax_price, ax_rate) = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
    first = next(iter(docs.values()), None)
    profile = TrafficProfile(**first.profile) if first and first.profile else None
    if profile is not None:
        start, end = profile.spike_interval_s()
        for ax in (ax_spend, ax_price, ax_rate):
            ax.axvspan(start, end, color="tab:orange", alpha=0.12, lw=0,
                       label="spike" if ax is ax_spend else None)  # fmt: skip
    for name, d in docs.items():
        wins, window_s = d.windows, d.window_s
        width = 2.2 if name == "greenflow" else 1.3
        spend = [_spend_rate(w, d) / 1e9 for w in wins]
        ax_spend.plot(*_steps(wins, spend, window_s), drawstyle="steps-post", lw=width, label=name)
        rate = [w.requests_per_s for w in wins]
        if all(r is not None for r in rate):
            ax_rate.plot(*_steps(wins, rate, window_s), drawstyle="steps-post", lw=width,
                         label=name)  # fmt: skip
    for budget in sorted({float(d.budget_flops_per_s) for d in docs.values()}):
        ax_spend.axhline(budget / 1e9, color="black", ls="--", lw=1.0, label="budget")
    priced = ["greenflow"] if "greenflow" in docs else list(docs)
    for name in priced:
        wins = docs[name].windows
        price = [w.dual_price for w in wins]
        ax_price.plot(*_steps(wins, price, docs[name].window_s), drawstyle="steps-post",
                      label=name)  # fmt: skip
    if profile is not None:
        grid = np.linspace(0.0, profile.duration_s, 400)
        ax_rate.plot(grid, profile.rate(grid), color="grey", ls="--", lw=1.0, label="offered")
    ax_spend.set_ylabel("spend per window (GFLOP/s)")
    ax_price.set_ylabel("dual price λ (clicks per FLOP)")
    ax_rate.set_ylabel("requests per window (req/s)")
    ax_rate.set_xlabel("time since load-test start (s)")
    ax_spend.set_title("Online allocation under a traffic spike")
    for ax in (ax_spend, ax_price, ax_rate):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    where = run_dir.write_figure(LOADTEST_PNG, fig)
    plt.close(fig)
    return where


def _steps(
    windows: Sequence[Window], values: Sequence[float], window_s: float | None
) -> tuple[list[float], list[float]]:
    """(times, values) for a steps-post line: window starts (s), plus the last window's end
    when its length is known, so the plot shows every window whole."""
    t, y = [float(w.t) for w in windows], list(values)
    if t and window_s:
        return [*t, t[-1] + window_s], [*y, y[-1]]
    return t, y


def _spend_rate(w: Window, doc: LoadtestDoc) -> float:
    """FLOPs/s of a window; without a window length, the budget share × the budget rate."""
    if w.spend_flops_per_s is not None:
        return float(w.spend_flops_per_s)
    share = w.spend / w.budget if w.budget > 0 else 0.0
    return share * float(doc.budget_flops_per_s)
