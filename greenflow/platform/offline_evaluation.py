"""The offline budget sweep of every allocation policy (``greenflow evaluate``); no Ray.

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

from greenflow.errors import ConfigError, InputError
from greenflow.platform.allocation.baselines import GreenFlowPolicy
from greenflow.platform.allocation.offline_policies import (
    PolicyInputs,
    build_offline_policies,
    rank_model_mask,
)
from greenflow.platform.bootstrap import ratio_ci
from greenflow.platform.chains import Chain, ChainSpace, stage_costs
from greenflow.platform.data.store import load_requests, read_horizon
from greenflow.platform.documents import ChainCurvePoint, MethodCurve, OfflineEvalDoc
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
from greenflow.platform.evaluation_report import format_headline, format_summary, plot
from greenflow.platform.models.pool import load_pool
from greenflow.platform.reward.data import load_simulated_chains, load_train_mean
from greenflow.platform.reward.store import predict_rewards
from greenflow.platform.run_dir import CALIBRATION, RunDir

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

    space: ChainSpace  # the simulation's
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
    simulated = load_simulated_chains(run_dir)
    chains, q = list(simulated.chains), simulated.flops
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
    return EvalInputs(simulated.space, chains, q, stage_costs(chains, pool.flops, pool.features.num_items), R,
                      train_mean, estimates, ev["user_id"].to_numpy(), expected)  # fmt: skip


def build_policies(inputs: EvalInputs) -> dict[str, Policy]:
    """The methods of DESIGN.md §2 (``OFFLINE_POLICIES``), named as in offline_eval.json."""
    return build_offline_policies(PolicyInputs(
        inputs.chains, inputs.q, inputs.stage_cost, inputs.R, inputs.train_mean,
        inputs.estimates["full"], inputs.expected,
    ))  # fmt: skip


def action_subsets(space: ChainSpace) -> dict[str, set[str]]:
    """Table 2's rows, named from the chain space: which actions GreenFlow may vary.

    ``k<s>`` frees stage s's item scale, ``m<s>`` its model. A row per scale that feeds a
    later stage, the last stage's model, all those scales, and every action; on recall →
    pre-rank → rank: "k1 only", "k2 only", "rank model only", "k1 + k2", "all actions".
    """
    n = len(space.stages)
    feeding = [f"k{s}" for s in range(1, n)]
    subsets = {f"{k} only": {k} for k in feeding}
    subsets[f"{space.stages[-1].name} model only"] = {f"m{n}"}
    if len(feeding) > 1:
        subsets[" + ".join(feeding)] = set(feeding)
    subsets["all actions"] = {f"{a}{s}" for a in "km" for s in range(1, n + 1)}
    return subsets


def _restricted(chains: list[Chain], full: Chain, free: set[str]) -> np.ndarray:
    """Chains that keep every action of ``full`` except the ``free`` ones (``action_subsets``)."""
    return np.array([
        all((a.k == f.k or f"k{s}" in free) and (a.model == f.model or f"m{s}" in free)
            for s, (a, f) in enumerate(zip(c.actions, full.actions, strict=True), start=1))
        for c in chains
    ])  # fmt: skip


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
    run_dir: RunDir,
    ev: EvaluateConfig,
    log: Callable[[str], None] = print,
    config_record: dict[str, Any] | None = None,
) -> OfflineEvalDoc:
    """Sweep every policy over the budgets on ``run_dir``'s evaluation split; write
    ``offline_eval.json`` and the plots. ``config_record``: the resolved configuration,
    kept in the document's ``"config"`` (the CLI passes ``config_to_dict``)."""
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
    table2 = {}
    for name, free in action_subsets(inputs.space).items():
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
    doc = OfflineEvalDoc(
        budgets=tuple(float(b) for b in budgets),
        methods={
            k: MethodCurve(
                clicks=tuple(c.clicks),
                flops=tuple(c.flops),
                dual_price=tuple(c.dual_price),
                feasible=tuple(c.feasible),
                expected_clicks=tuple(c.expected_clicks) if c.expected_clicks else None,
            )
            for k, c in curves.items()
        },
        return_pct={k: return_pct(c, oracle) for k, c in curves.items()},
        flops_saving_at_equal_clicks={
            k: flops_saving_at_equal_clicks(c, full_clicks, full_flops) for k, c in curves.items()
        },
        full_chain={"id": full_chain.id, "clicks": full_clicks, "flops": full_flops},
        requests=n,
        horizon=read_horizon(run_dir.data),
        chain_curve=tuple(
            ChainCurvePoint.from_json(row)
            for row in chain_curve(
                [c.id for c in inputs.chains], inputs.q, inputs.R, inputs.expected
            )
        ),  # fmt: skip
        headline=headline(inputs, curves, budgets, ev),
        pfec={k: _pfec(*at_budget(c, table_budget), calibration, pfec) for k, c in curves.items()},
        extra={
            "table_budget_flops": table_budget,
            "table2_action_subsets": table2,
            "table3_rank_models": table3,
            "table4_reward_variants": table4,
            "pfec_budget_flops": table_budget,
            "joules_per_flop": calibration["joules_per_flop"],
            **({"config": config_record} if config_record is not None else {}),
        },
    )
    run_dir.write_offline_eval(doc)
    plot(doc, run_dir)
    return doc


__all__ = ["EvaluateConfig", "format_headline", "format_summary", "load_inputs", "run_evaluation"]
