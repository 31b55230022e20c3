"""What ``greenflow evaluate`` shows of ``offline_eval.json``: its plots and its tables.

``plot`` writes ``offline_clicks.png`` (clicks against the FLOPs budget, every policy: the
paper's Figure 4), ``offline_dual_price.png`` (λ* against the budget) and
``chain_curve.png`` (every chain's clicks against its cost, with the Pareto front) into the
run directory; ``format_summary`` and ``format_headline`` give the printed tables. Reads
only the document (budgets in FLOPs, clicks), so a saved run can be re-plotted. No Ray.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from greenflow.platform.documents import OfflineEvalDoc
from greenflow.platform.run_dir import (
    CHAIN_CURVE_PNG,
    OFFLINE_CLICKS_PNG,
    OFFLINE_DUAL_PRICE_PNG,
    RunDir,
)

STYLE = {"greenflow": ("tab:green", "-", "o"), "oracle": ("black", "--", None),
         "equal": ("tab:blue", "-", "s"), "cras": ("tab:orange", "-", "^"),
         "dcaf": ("tab:purple", "-", "d")}  # fmt: skip


def plot(doc: OfflineEvalDoc, run_dir: RunDir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = np.array(doc.budgets) / 1e9
    # With a known click model the plot shows *expected* clicks: no draw noise, and the
    # true ceiling oracle-expected among the lines; logged runs show realised clicks.
    key = "expected_clicks" if doc.expected else "clicks"
    ceilings = ("oracle", "oracle-expected") if key == "clicks" else ("oracle-expected",)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    curves = {name: getattr(m, key) for name, m in doc.methods.items()}
    for name, values in curves.items():
        if key == "expected_clicks" and name == "oracle":
            continue  # solves on realised clicks: not comparable on expected ones
        color, ls, marker = STYLE.get(name, (None, ":", None))
        ax.plot(budgets, values, label=name, color=color, linestyle=ls, marker=marker,
                markersize=4, linewidth=2.2 if name == "greenflow" else 1.2)  # fmt: skip
    full = (doc.full_chain or {})["clicks"]
    if key != "clicks":  # the most expensive chain's mean expected clicks, for all requests
        full = getattr(max(doc.chain_curve, key=lambda r: r.flops), key) * doc.requests
    ax.axhline(full, color="grey", linewidth=0.8, linestyle="-.",
               label="everyone on the full chain")  # fmt: skip
    # The exact solves profit from per-request luck (realised clicks) or from which chain
    # happens to pass the clickable items (expected clicks): they sit far above every
    # allocator and would flatten the differences that matter, so the axis stops above
    # the allocators and the ceiling's level is written instead.
    others = [c for name, values in curves.items() if name not in ("oracle", "oracle-expected")
              for c in values]  # fmt: skip
    top, bottom = max(others), min(others)
    ceiling_top, ceiling = max((max(curves[n]), n) for n in ceilings if n in curves)
    if ceiling_top > top + 0.5 * (top - bottom):
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.15 * (top - bottom))
        ax.text(0.3, 0.97, f"{ceiling} (exact solve) reaches {ceiling_top:,.0f}: off the chart",
                transform=ax.transAxes, fontsize=8, va="top")  # fmt: skip
    ax.set_xlabel("FLOPs budget for the evaluation requests (GFLOPs)")
    ax.set_ylabel("expected clicks (known click model)" if key != "clicks"
                  else "clicks (true, evaluation split)")  # fmt: skip
    ax.set_title(f"Clicks vs computation budget — {doc.requests} requests")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    run_dir.write_figure(OFFLINE_CLICKS_PNG, fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("greenflow", "oracle"):
        ax.plot(budgets, doc.methods[name].dual_price, marker="o", label=name)
    ax.set_xlabel("FLOPs budget (GFLOPs)")
    ax.set_ylabel("dual price λ* (clicks per FLOP)")
    ax.set_yscale("symlog", linthresh=1e-9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    run_dir.write_figure(OFFLINE_DUAL_PRICE_PNG, fig)
    plt.close(fig)
    plot_chain_curve(doc, run_dir)


def plot_chain_curve(doc: OfflineEvalDoc, run_dir: RunDir) -> None:
    """Mean clicks per request of every chain against its cost, with the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc.chain_curve
    rank_models = sorted({r.chain.split(">")[-1].split("@")[0] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for model, marker in zip(rank_models, ("o", "s", "^", "d"), strict=False):
        mine = [r for r in rows if r.chain.split(">")[-1].startswith(model + "@")]
        ax.scatter([r.flops / 1e6 for r in mine], [r.clicks for r in mine], s=22,
                   marker=marker, alpha=0.6, label=f"chains ranked by {model}")  # fmt: skip
    front = [r for r in rows if r.pareto]
    ax.plot([r.flops / 1e6 for r in front], [r.clicks for r in front], color="tab:green",
            linewidth=2, marker="o", label="Pareto front")  # fmt: skip
    for r in (front[0], front[-1]):
        ax.annotate(r.chain, (r.flops / 1e6, r.clicks), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")  # fmt: skip
    value = (doc.headline or {})["full_over_cheapest"]
    ax.set_title(f"Value of computation — full chain {value['ratio']:.2f}x the cheapest "
                 f"(95% CI {value['ci95'][0]:.2f}–{value['ci95'][1]:.2f}), horizon {doc.horizon}",
                 fontsize=9)  # fmt: skip
    ax.set_xlabel("cost of the chain (MFLOPs per request)")
    ax.set_ylabel("clicks per request (true, evaluation split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    run_dir.write_figure(CHAIN_CURVE_PNG, fig)
    plt.close(fig)


def format_summary(doc: OfflineEvalDoc) -> str:
    """Clicks and Return% per method at a few budgets, and the FLOPs saving."""
    budgets = doc.budgets
    full = (doc.full_chain or {})["flops"]
    cols = [i for i in range(len(budgets)) if 0.25 <= budgets[i] / full <= 0.95][::2] or [
        len(budgets) - 1
    ]
    head = (
        f"{'method':<12}" + "".join(f"{budgets[i] / full:>12.0%}" for i in cols) + f"{'saving':>9}"
    )
    lines = [head]
    for name, m in doc.methods.items():
        saving = doc.flops_saving_at_equal_clicks[name]
        cells = "".join(f"{m.clicks[i]:>7.0f} {doc.return_pct[name][i]:>3.0f}%" for i in cols)
        lines.append(f"{name:<12}{cells}{'   never' if saving is None else f'{saving:>9.0%}'}")
    return "\n".join(lines)


def format_headline(doc: OfflineEvalDoc) -> str:
    """The value of computation and GreenFlow against the best baseline, with 95% CIs."""
    head = doc.headline or {}
    value = head["full_over_cheapest"]
    lines = [
        f"value of computation ({doc.requests} requests of {head['users']} users, horizon "
        f"{doc.horizon}): the full chain earns {value['ratio']:.3f}x the cheapest chain's "
        f"clicks (95% CI {value['ci95'][0]:.3f}-{value['ci95'][1]:.3f})",
        f"{'budget':>8} {'best baseline':<14} {'GreenFlow / best':>17} {'95% CI':>15}"
        f" {'/ equal':>8} {'/ cras':>8} {'/ dcaf':>8} {'/ oracle':>9}",
    ]
    for row in head["greenflow_vs_baselines"]:
        best, vs = row["vs_best"], row["vs"]
        lines.append(
            f"{row['budget_fraction']:>8.0%} {row['best_baseline']:<14} {best['ratio']:>17.3f}"
            f" {best['ci95'][0]:>7.3f}-{best['ci95'][1]:<7.3f}"
            + "".join(f" {vs[m]['ratio']:>8.3f}" for m in ("equal", "cras", "dcaf"))
            + f" {vs['oracle']['ratio']:>9.3f}"
        )
    if "expected" in head:
        lines += _format_expected(head["expected"])
    return "\n".join(lines)


def _format_expected(expected: dict[str, Any]) -> list[str]:
    """The known click model's block: ratios of *expected* clicks, the true ceiling too."""
    value = expected["full_over_cheapest"]
    lines = [
        f"on expected clicks (known click model): full / cheapest {value['ratio']:.3f}x "
        f"(95% CI {value['ci95'][0]:.3f}-{value['ci95'][1]:.3f})",
        f"{'budget':>8} {'/ oracle-expected':>18} {'95% CI':>15}"
        f" {'/ equal':>8} {'/ cras':>8} {'/ dcaf':>8}",
    ]
    for row in expected["greenflow_vs"]:
        vs = row["vs"]
        ceiling = vs["oracle-expected"]
        lines.append(
            f"{row['budget_fraction']:>8.0%} {ceiling['ratio']:>18.3f}"
            f" {ceiling['ci95'][0]:>7.3f}-{ceiling['ci95'][1]:<7.3f}"
            + "".join(f" {vs[m]['ratio']:>8.3f}" for m in ("equal", "cras", "dcaf"))
        )
    return lines
