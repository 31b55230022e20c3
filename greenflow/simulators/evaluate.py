"""``greenflow evaluate``: the offline budget sweep of every allocation policy (issue: allocation).

Inputs, all from the run directory: the evaluation split's true rewards of every chain
(``samples/``), chain costs (``simulation.json``), the reward model's estimates
(``reward/<variant>.pt`` via ``predict_rewards``), the cascade FLOPs (``model_pool.json``)
and the measured joules per FLOP (``pfec_calibration.json``; run
``greenflow pfec calibrate`` first).

Outputs: ``offline_eval.json`` (DESIGN.md §5) and two plots, ``offline_clicks.png`` (clicks
against FLOPs budget, every policy: the paper's Figure 4) and ``offline_dual_price.png``
(λ* against budget), and ``chain_curve.png`` (every chain's clicks against its cost, with
the Pareto front: the value of computation). Headline ratios carry 95% bootstrap
intervals over users (``platform/bootstrap.py``). A synthetic run (known click model)
adds expected rewards: every method's ``expected_clicks``, the ``oracle-expected`` method
(the exact solve on them), ``headline.expected``, and plots on expected clicks. Energy and carbon are *estimates*:
FLOPs × the calibrated joules per FLOP × PUE (× carbon intensity), and are labelled so.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from greenflow.config import Config, config_to_dict
from greenflow.errors import ConfigError, InputError
from greenflow.platform.allocation.baselines import GreenFlowPolicy
from greenflow.platform.allocation.offline_policies import (
    PolicyInputs,
    build_offline_policies,
    rank_model_mask,
)
from greenflow.platform.bootstrap import ratio_ci
from greenflow.platform.chains import Chain, stage_costs
from greenflow.platform.data.store import load_requests, read_horizon
from greenflow.platform.energy import PFECConfig
from greenflow.platform.energy.report import estimated_pfec
from greenflow.platform.evaluation import (
    Curve,
    Policy,
    at_budget,
    budget_grid,
    chain_curve,
    evaluate_policies,
    flops_saving_at_equal_clicks,
    return_pct,
    sweep,
)
from greenflow.platform.models.pool import load_pool
from greenflow.platform.reward.data import load_train_mean
from greenflow.platform.reward.store import predict_rewards
from greenflow.platform.run_dir import (
    CALIBRATION,
    CHAIN_CURVE_PNG,
    OFFLINE_CLICKS_PNG,
    OFFLINE_DUAL_PRICE_PNG,
    RunDir,
)

VARIANTS = ("full", "no-recursion", "no-basis", "plain")


@dataclass(frozen=True)
class EvaluateConfig:
    budgets: int = 12  # sweep points from everyone-cheapest to everyone-full
    table_fraction: float = 0.5  # tables report clicks at this fraction of the full cost
    # Budgets (fractions of the full cost) at which GreenFlow is compared with the best
    # baseline in the headline; the grid is thickened so that several points fall inside.
    headline_fractions: tuple[float, float] = (0.15, 0.6)
    # With a known click model (synthetic): GreenFlow against the true ceiling, on expected
    # clicks, over this range of the full cost.
    expected_fractions: tuple[float, float] = (0.2, 0.9)

    def __post_init__(self) -> None:
        if self.budgets < 2:
            raise ConfigError("a sweep needs at least 2 budgets")


BASELINES = ("equal", "cras", "dcaf")  # the practical competitors of the headline


@dataclass
class EvalInputs:
    """Everything the sweep needs, aligned on the evaluation requests."""

    chains: list[Chain]
    q: np.ndarray  # (J,) FLOPs per request
    stage_cost: np.ndarray  # (J, S)
    R: np.ndarray  # (N, J) true clicks
    train_mean: np.ndarray  # (J,) mean true clicks on the reward (training) split
    estimates: dict[str, np.ndarray]  # reward-model variant -> Q̂ (N, J)
    users: np.ndarray  # (N,) user of each evaluation request (bootstrap unit)
    expected: np.ndarray | None = None  # (N, J) E[R] from the known click model (synthetic)


def load_inputs(run_dir: RunDir) -> EvalInputs:
    """The evaluation split's rewards, the chains' costs and every trained variant's Q̂."""
    sim = run_dir.read_simulation()
    chains = [Chain.parse(c["id"]) for c in sim["chains"]]
    q = np.array([c["flops"] for c in sim["chains"]], dtype=np.float64)
    pool = load_pool(run_dir)
    samples = run_dir.read_samples().to_pandas()
    samples = samples[samples["error"].isna()]
    ev = samples[samples["split"] == "eval"].sort_values("request_id")
    if ev.empty:
        raise InputError("no evaluation-split samples: simulate with --splits reward,eval")
    R = np.zeros((len(ev), len(chains)))
    for row, (idx, rew) in enumerate(zip(ev["chain_idx"], ev["reward"], strict=True)):
        R[row, np.asarray(idx)] = rew
    expected = None
    if "expected_reward" in ev and ev["expected_reward"].notna().all():
        expected = np.zeros_like(R)
        for row, (idx, exp) in enumerate(zip(ev["chain_idx"], ev["expected_reward"],
                                             strict=True)):  # fmt: skip
            expected[row, np.asarray(idx)] = exp
    train_mean = load_train_mean(run_dir, len(chains))
    requests = load_requests(run_dir.data, "eval").set_index("request_id")
    frame = requests.loc[ev["request_id"].to_numpy()].reset_index()
    estimates = {
        v: predict_rewards(run_dir, v, frame) for v in VARIANTS if run_dir.has_reward_model(v)
    }
    if "full" not in estimates:
        raise FileNotFoundError(
            f"{run_dir.show(run_dir.reward_weights('full'))}: run `greenflow train-reward` first"
        )
    return EvalInputs(chains, q, stage_costs(chains, pool.flops, pool.features.num_items), R,
                      train_mean, estimates, ev["user_id"].to_numpy(), expected)  # fmt: skip


def build_policies(inputs: EvalInputs) -> dict[str, Policy]:
    """The methods of DESIGN.md §2 (``OFFLINE_POLICIES``), named as in offline_eval.json."""
    return build_offline_policies(PolicyInputs(
        inputs.chains, inputs.q, inputs.stage_cost, inputs.R, inputs.train_mean,
        inputs.estimates["full"], inputs.expected,
    ))  # fmt: skip


def _restricted(chains: list[Chain], full: Chain, free: set[str]) -> np.ndarray:
    """Chains that keep every action of ``full`` except the ``free`` ones."""
    keep = []
    for c in chains:
        ok = True
        for s, (a, f) in enumerate(zip(c.actions, full.actions, strict=True)):
            if f"k{s + 1}" not in free and a.k != f.k:
                ok = False
            if "model" not in free and s == len(c.actions) - 1 and a.model != f.model:
                ok = False
        keep.append(ok)
    return np.array(keep)


def _clicks_per_request(curve: Curve, R: np.ndarray, index: int) -> np.ndarray:
    return R[np.arange(R.shape[0]), curve.choices[index]]


def headline(
    inputs: EvalInputs, curves: dict[str, Curve], budgets: np.ndarray, ev: EvaluateConfig
) -> dict[str, Any]:
    """The ratios a reader checks first, each with a 95% bootstrap interval over users:
    the full chain's clicks over the cheapest chain's (the value of computation), and
    GreenFlow's clicks over the best of EQUAL, CRAS and DCAF at every swept budget within
    ``ev.headline_fractions`` of the full cost."""
    R, q, users = inputs.R, inputs.q, inputs.users
    full, cheapest = int(np.argmax(q)), int(np.argmin(q))
    full_flops = float(q[full] * R.shape[0])
    value = ratio_ci(R[:, full], R[:, cheapest], users)
    rows = []
    for i, fraction in _budgets_within(budgets, full_flops, ev.headline_fractions):
        best = max(BASELINES, key=lambda m: curves[m].clicks[i])
        mine = _clicks_per_request(curves["greenflow"], R, i)
        vs = {m: ratio_ci(mine, _clicks_per_request(curves[m], R, i), users).to_json()
              for m in (*BASELINES, "oracle")}  # fmt: skip
        rows.append({"budget_fraction": round(fraction, 4), "best_baseline": best,
                     "vs_best": vs[best], "vs": vs})  # fmt: skip
    doc = {
        "full_over_cheapest": {
            **value.to_json(),
            "full": inputs.chains[full].id,
            "cheapest": inputs.chains[cheapest].id,
        },  # fmt: skip
        "greenflow_vs_baselines": rows,
        "users": int(len(np.unique(users))),
    }
    if inputs.expected is not None:
        doc["expected"] = _expected_headline(inputs, curves, budgets, ev)
    return doc


def _budgets_within(
    budgets: np.ndarray, full_flops: float, fractions: tuple[float, float]
) -> list[tuple[int, float]]:
    """(index, fraction of the full cost) of the swept budgets within ``fractions``."""
    low, high = fractions
    return [(i, float(b / full_flops)) for i, b in enumerate(budgets)
            if low - 1e-9 <= b / full_flops <= high + 1e-9]  # fmt: skip


def _expected_headline(
    inputs: EvalInputs, curves: dict[str, Curve], budgets: np.ndarray, ev: EvaluateConfig
) -> dict[str, Any]:
    """The same ratios on *expected* clicks (the known click model), GreenFlow against the
    true ceiling ``oracle-expected`` included, over ``ev.expected_fractions``."""
    E, q, users = inputs.expected, inputs.q, inputs.users
    assert E is not None
    full, cheapest = int(np.argmax(q)), int(np.argmin(q))
    full_flops = float(q[full] * E.shape[0])
    rows = []
    for i, fraction in _budgets_within(budgets, full_flops, ev.expected_fractions):
        mine = _clicks_per_request(curves["greenflow"], E, i)
        vs = {m: ratio_ci(mine, _clicks_per_request(curves[m], E, i), users).to_json()
              for m in (*BASELINES, "oracle-expected")}  # fmt: skip
        rows.append({"budget_fraction": round(fraction, 4), "vs": vs})
    return {
        "full_over_cheapest": ratio_ci(E[:, full], E[:, cheapest], users).to_json(),
        "greenflow_vs": rows,
    }


def sweep_budgets(q: np.ndarray, n: int, ev: EvaluateConfig, expected: bool = False) -> np.ndarray:
    """The even sweep from everyone-cheapest to everyone-full (``ev.budgets`` points), plus
    the headline range in steps of 5% of the full cost where no sweep point is within 1%
    (so the headline is checked at more than two points)."""
    full = float(q.max() * n)
    grid = budget_grid(q, n, ev.budgets)
    ranges = [ev.headline_fractions, *([ev.expected_fractions] if expected else [])]
    fractions = np.concatenate([np.arange(lo, hi + 1e-9, 0.05) for lo, hi in ranges])
    extra = np.unique(np.round(fractions, 4)) * full
    extra = extra[
        (extra >= q.min() * n) & (np.abs(extra[:, None] - grid).min(axis=1) > 0.01 * full)
    ]
    return np.unique(np.concatenate([grid, extra]))


def _pfec(
    clicks: float, flops: float, calibration: dict[str, Any], pfec: PFECConfig
) -> dict[str, Any]:
    return estimated_pfec({"clicks": clicks}, flops, calibration, pfec)


def run_evaluation(
    config: Config, ev: EvaluateConfig, log: Callable[[str], None] = print
) -> dict[str, Any]:
    run_dir = config.run_dir
    calibration = run_dir.read_calibration()
    if calibration is None:
        raise FileNotFoundError(
            f"{run_dir.show(CALIBRATION)}: run `greenflow pfec calibrate` first"
        )
    inputs = load_inputs(run_dir)
    n = inputs.R.shape[0]
    budgets = sweep_budgets(inputs.q, n, ev, expected=inputs.expected is not None)
    log(f"evaluating {n} requests x {len(inputs.chains)} chains at {len(budgets)} budgets")
    curves = evaluate_policies(build_policies(inputs), inputs.R, inputs.q, budgets,
                               inputs.expected)  # fmt: skip
    full = int(np.argmax(inputs.q))
    full_clicks, full_flops = float(inputs.R[:, full].sum()), float(inputs.q[full] * n)
    oracle = curves["oracle"]
    table_budget = ev.table_fraction * full_flops

    def greenflow_at_table_budget(Q: np.ndarray, mask: np.ndarray | None = None) -> dict[str, Any]:
        """GreenFlow on a subset of chains at the table budget, charged the true rewards."""
        c = sweep(GreenFlowPolicy(Q, inputs.q, mask), inputs.R, inputs.q, np.array([table_budget]))
        return {"clicks": c.clicks[0], "flops": c.flops[0], "feasible": c.feasible[0]}

    # Table 2: which actions GreenFlow may vary (the rest fixed at the full chain's)
    full_chain = inputs.chains[full]
    Q_full = inputs.estimates["full"]
    subsets = {"k1 only": {"k1"}, "k2 only": {"k2"}, "rank model only": {"model"},
               "k1 + k2": {"k1", "k2"}, "all actions": {"k1", "k2", "model"}}  # fmt: skip
    table2 = {}
    for name, free in subsets.items():
        mask = _restricted(inputs.chains, full_chain, free)
        table2[name] = {**greenflow_at_table_budget(Q_full, mask), "chains": int(mask.sum())}
    # Table 3: rank-model pools
    rank_models = sorted({c.actions[-1].model for c in inputs.chains})
    table3 = {m: greenflow_at_table_budget(Q_full, rank_model_mask(inputs.chains, m))
              for m in rank_models}  # fmt: skip
    table3["both"] = greenflow_at_table_budget(Q_full)
    # Table 4 clicks column: reward-model variants
    table4 = {v: greenflow_at_table_budget(Q) for v, Q in inputs.estimates.items()}

    pfec = PFECConfig()
    doc: dict[str, Any] = {
        "budgets": [float(b) for b in budgets],
        "methods": {
            k: {
                "clicks": c.clicks,
                "flops": c.flops,
                "dual_price": c.dual_price,
                "feasible": c.feasible,
                **({"expected_clicks": c.expected_clicks} if c.expected_clicks else {}),
            }
            for k, c in curves.items()
        },  # fmt: skip
        "return_pct": {k: return_pct(c, oracle) for k, c in curves.items()},
        "flops_saving_at_equal_clicks": {
            k: flops_saving_at_equal_clicks(c, full_clicks, full_flops) for k, c in curves.items()
        },
        "full_chain": {"id": full_chain.id, "clicks": full_clicks, "flops": full_flops},
        "requests": n,
        "horizon": read_horizon(run_dir.data),
        "chain_curve": chain_curve(
            [c.id for c in inputs.chains], inputs.q, inputs.R, inputs.expected
        ),  # fmt: skip
        "headline": headline(inputs, curves, budgets, ev),
        "table_budget_flops": table_budget,
        "table2_action_subsets": table2,
        "table3_rank_models": table3,
        "table4_reward_variants": table4,
        "pfec": {
            k: _pfec(*at_budget(c, table_budget), calibration, pfec) for k, c in curves.items()
        },
        "pfec_budget_flops": table_budget,
        "joules_per_flop": calibration["joules_per_flop"],
        "config": config_to_dict(config),
    }
    run_dir.write_offline_eval(doc)
    plot(doc, run_dir)
    return doc


STYLE = {"greenflow": ("tab:green", "-", "o"), "oracle": ("black", "--", None),
         "equal": ("tab:blue", "-", "s"), "cras": ("tab:orange", "-", "^"),
         "dcaf": ("tab:purple", "-", "d")}  # fmt: skip


def plot(doc: dict[str, Any], run_dir: RunDir) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    budgets = np.array(doc["budgets"]) / 1e9
    # With a known click model the plot shows *expected* clicks: no draw noise, and the
    # true ceiling oracle-expected among the lines; logged runs show realised clicks.
    key = "expected_clicks" if "expected_clicks" in doc["methods"]["greenflow"] else "clicks"
    ceilings = ("oracle", "oracle-expected") if key == "clicks" else ("oracle-expected",)
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for name, m in doc["methods"].items():
        if key == "expected_clicks" and name == "oracle":
            continue  # solves on realised clicks: not comparable on expected ones
        color, ls, marker = STYLE.get(name, (None, ":", None))
        ax.plot(budgets, m[key], label=name, color=color, linestyle=ls, marker=marker,
                markersize=4, linewidth=2.2 if name == "greenflow" else 1.2)  # fmt: skip
    full = doc["full_chain"]["clicks"]
    if key != "clicks":  # the most expensive chain's mean expected clicks, for all requests
        full = max(doc["chain_curve"], key=lambda r: r["flops"])[key] * doc["requests"]
    ax.axhline(full, color="grey", linewidth=0.8, linestyle="-.",
               label="everyone on the full chain")  # fmt: skip
    # The exact solves profit from per-request luck (realised clicks) or from which chain
    # happens to pass the clickable items (expected clicks): they sit far above every
    # allocator and would flatten the differences that matter, so the axis stops above
    # the allocators and the ceiling's level is written instead.
    others = [c for name, m in doc["methods"].items() if name not in ("oracle", "oracle-expected")
              for c in m[key]]  # fmt: skip
    top, bottom = max(others), min(others)
    ceiling_top, ceiling = max((max(doc["methods"][n][key]), n) for n in ceilings
                               if n in doc["methods"])  # fmt: skip
    if ceiling_top > top + 0.5 * (top - bottom):
        ax.set_ylim(bottom - 0.05 * (top - bottom), top + 0.15 * (top - bottom))
        ax.text(0.3, 0.97, f"{ceiling} (exact solve) reaches {ceiling_top:,.0f}: off the chart",
                transform=ax.transAxes, fontsize=8, va="top")  # fmt: skip
    ax.set_xlabel("FLOPs budget for the evaluation requests (GFLOPs)")
    ax.set_ylabel("expected clicks (known click model)" if key != "clicks"
                  else "clicks (true, evaluation split)")  # fmt: skip
    ax.set_title(f"Clicks vs computation budget — {doc['requests']} requests")
    ax.legend(fontsize=8, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    run_dir.write_figure(OFFLINE_CLICKS_PNG, fig)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4))
    for name in ("greenflow", "oracle"):
        ax.plot(budgets, doc["methods"][name]["dual_price"], marker="o", label=name)
    ax.set_xlabel("FLOPs budget (GFLOPs)")
    ax.set_ylabel("dual price λ* (clicks per FLOP)")
    ax.set_yscale("symlog", linthresh=1e-9)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    run_dir.write_figure(OFFLINE_DUAL_PRICE_PNG, fig)
    plt.close(fig)
    plot_chain_curve(doc, run_dir)


def plot_chain_curve(doc: dict[str, Any], run_dir: RunDir) -> None:
    """Mean clicks per request of every chain against its cost, with the Pareto front."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = doc["chain_curve"]
    rank_models = sorted({r["chain"].split(">")[-1].split("@")[0] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for model, marker in zip(rank_models, ("o", "s", "^", "d"), strict=False):
        mine = [r for r in rows if r["chain"].split(">")[-1].startswith(model + "@")]
        ax.scatter([r["flops"] / 1e6 for r in mine], [r["clicks"] for r in mine], s=22,
                   marker=marker, alpha=0.6, label=f"chains ranked by {model}")  # fmt: skip
    front = [r for r in rows if r["pareto"]]
    ax.plot([r["flops"] / 1e6 for r in front], [r["clicks"] for r in front], color="tab:green",
            linewidth=2, marker="o", label="Pareto front")  # fmt: skip
    for r in (front[0], front[-1]):
        ax.annotate(r["chain"], (r["flops"] / 1e6, r["clicks"]), fontsize=7,
                    xytext=(4, -10), textcoords="offset points")  # fmt: skip
    value = doc["headline"]["full_over_cheapest"]
    ax.set_title(f"Value of computation — full chain {value['ratio']:.2f}x the cheapest "
                 f"(95% CI {value['ci95'][0]:.2f}–{value['ci95'][1]:.2f}), horizon {doc['horizon']}",
                 fontsize=9)  # fmt: skip
    ax.set_xlabel("cost of the chain (MFLOPs per request)")
    ax.set_ylabel("clicks per request (true, evaluation split)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    run_dir.write_figure(CHAIN_CURVE_PNG, fig)
    plt.close(fig)


def format_summary(doc: dict[str, Any]) -> str:
    """Clicks and Return% per method at a few budgets, and the FLOPs saving."""
    budgets = doc["budgets"]
    full = doc["full_chain"]["flops"]
    cols = [i for i in range(len(budgets)) if 0.25 <= budgets[i] / full <= 0.95][::2] or [
        len(budgets) - 1
    ]
    head = (
        f"{'method':<12}" + "".join(f"{budgets[i] / full:>12.0%}" for i in cols) + f"{'saving':>9}"
    )
    lines = [head]
    for name, m in doc["methods"].items():
        saving = doc["flops_saving_at_equal_clicks"][name]
        cells = "".join(f"{m['clicks'][i]:>7.0f} {doc['return_pct'][name][i]:>3.0f}%" for i in cols)
        lines.append(f"{name:<12}{cells}{'   never' if saving is None else f'{saving:>9.0%}'}")
    return "\n".join(lines)


def format_headline(doc: dict[str, Any]) -> str:
    """The value of computation and GreenFlow against the best baseline, with 95% CIs."""
    head = doc["headline"]
    value = head["full_over_cheapest"]
    lines = [
        f"value of computation ({doc['requests']} requests of {head['users']} users, horizon "
        f"{doc['horizon']}): the full chain earns {value['ratio']:.3f}x the cheapest chain's "
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
