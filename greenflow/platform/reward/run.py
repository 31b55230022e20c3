"""``greenflow train-reward``: train reward-model variants and write ``reward_model.json``.

Data (``data.py``): the 'reward' split of the simulated samples, split *by user* into
training and validation (``RewardTrainConfig.val_fraction``, seeded); the 'eval' split
(every chain of every request) is only ever predicted, never trained on. Metrics
(``metrics.py``): validation loss, MAE and Field-RCE over chain id and activity bucket,
on validation and on eval. A per-chain-mean predictor (Q_ij = training mean of R_·j) is
reported beside the variants: a model that cannot beat it has learnt nothing about users.

``reward_model.json`` (DESIGN.md §5) is read, updated for the variants trained, and
written back, so training one variant keeps the others' entries.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from greenflow.errors import ConfigError
from greenflow.platform.data.store import read_horizon
from greenflow.platform.documents import RewardModelDoc, RewardVariant
from greenflow.platform.models.features import FeatureSet
from greenflow.platform.models.pool import probe_context
from greenflow.platform.reward.data import (
    EmptySplitError,
    RewardData,
    SimulatedChains,
    load_features,
    load_reward_data,
    load_simulated_chains,
    split_by_user,
)
from greenflow.platform.reward.encoding import ChainEncoding, encode_chains
from greenflow.platform.reward.loss import LossKind
from greenflow.platform.reward.metrics import activity_bucket_edges
from greenflow.platform.reward.model import (
    VARIANTS,
    RewardModel,
    RewardModelConfig,
    VariantName,
    reward_flops_per_request,
)
from greenflow.platform.reward.store import (
    check_variant,
    model_config_from_dict,
    save_reward_model,
)
from greenflow.platform.reward.training import (
    RewardTrainConfig,
    RewardTrainResult,
    evaluate,
    predict,
    train_reward_model,
)
from greenflow.platform.run_dir import RunDir

FIELD_RCE_RULE = (
    "Field-RCE = sum_z (|D_z|/|D|) |sum_{D_z}(y - y_hat)| / sum_{D_z} y over (request, chain) "
    "pairs; fields: chain id, and activity bucket (equal-count quantile buckets of the "
    "training requests' activity, edges in activity_bucket_edges); values with sum y = 0 "
    "are skipped and the weights renormalised over the rest"
)


@dataclasses.dataclass(frozen=True)
class RewardDataset:
    """Everything a training run reads, loaded once (also what Ray Tune ships to trials)."""

    features: FeatureSet
    chains: SimulatedChains
    train: RewardData
    val: RewardData
    eval: RewardData | None  # None when the eval split was not simulated
    activity_edges: np.ndarray

    @property
    def encoding(self) -> ChainEncoding:
        return encode_chains(self.chains.space, self.chains.chains)


def load_training_data(run_dir: RunDir, config: RewardTrainConfig) -> RewardDataset:
    """Load and split the run's reward samples (see the module docstring)."""
    features = load_features(run_dir)
    chains = load_simulated_chains(run_dir)
    j = len(chains.chains)
    reward = load_reward_data(run_dir, "reward", features, j)
    train, val = split_by_user(reward, config.val_fraction, config.seed)
    try:
        eval_data: RewardData | None = load_reward_data(run_dir, "eval", features, j)
    except EmptySplitError:  # eval split not simulated (`simulate --splits reward`)
        eval_data = None
    edges = activity_bucket_edges(train.activity, config.activity_buckets)
    return RewardDataset(features, chains, train, val, eval_data, edges)


def fit_reward_model(
    data: RewardDataset,
    model_config: RewardModelConfig,
    train_config: RewardTrainConfig,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> tuple[RewardModel, RewardTrainResult]:
    """The pure objective: a fresh seeded model trained on ``data.train``, early-stopped on
    ``data.val``; the same function serves ``train-reward`` and every Ray Tune trial."""
    torch.manual_seed(train_config.seed)
    model = RewardModel(data.features, data.chains.space, model_config)
    result = train_reward_model(
        model, data.encoding, data.train, data.val, train_config, log, on_epoch
    )
    return model, result


def overhead(
    model_config: RewardModelConfig, data: RewardDataset
) -> tuple[int, float, dict[str, Any]]:
    """(reward-model FLOPs per request for all J chains, that / the full chain's FLOPs,
    the full chain). FLOPs depend on the architecture only, so no weights are needed."""
    model = RewardModel(data.features, data.chains.space, model_config)
    ctx = probe_context(data.features)  # one request, full-length history
    ctx["activity"] = torch.ones(1, dtype=torch.int64)
    flops = reward_flops_per_request(model, data.encoding, ctx)
    # The default chain of the cascade is the "full" one: the most expensive.
    full = int(np.argmax(data.chains.flops))
    full_chain = {"id": data.chains.ids[full], "flops": float(data.chains.flops[full])}
    return flops, flops / full_chain["flops"], full_chain


def variant_config(base: RewardModelConfig, variant: VariantName) -> RewardModelConfig:
    """``base``'s sizes with ``variant``'s ablation switches."""
    switches = VARIANTS[variant]
    return dataclasses.replace(base, recursive=switches.recursive, multi_basis=switches.multi_basis)


def chain_mean_baseline(data: RewardDataset, kind: LossKind) -> dict[str, Any]:
    """Metrics of Q_ij = mean training reward of chain j (no user information at all)."""
    sums, counts = (data.train.reward * data.train.mask).sum(0), data.train.mask.sum(0)
    # A chain never sampled in training falls back to the overall mean.
    overall = sums.sum() / max(counts.sum(), 1)
    mean = np.where(counts > 0, sums / np.maximum(counts, 1), overall).astype(np.float32)
    out = {}
    for name, split in (("val", data.val), ("eval", data.eval)):
        if split is not None:
            pred = np.broadcast_to(mean, split.reward.shape).copy()
            out[name] = _rounded(evaluate(pred, split, data.activity_edges, kind))
    return out


def _rounded(value: Any, digits: int = 6) -> Any:
    """Floats to ``digits`` significant digits (ratios like 6e-4 keep their precision)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def _evaluate_splits(
    model: RewardModel, data: RewardDataset, config: RewardTrainConfig
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(validation metrics, eval metrics or None)."""
    val = evaluate(predict(model, data.encoding, data.val), data.val, data.activity_edges,
                   config.loss)  # fmt: skip
    if data.eval is None:
        return val, None
    evals = evaluate(predict(model, data.encoding, data.eval), data.eval, data.activity_edges,
                     config.loss)  # fmt: skip
    return val, evals


# Metrics summarised across seeds: (name, split, path in the metrics dict).
SEED_METRICS = (
    ("val_loss", "val", ("loss",)),
    ("mae", "val", ("mae",)),
    ("field_rce_chain", "val", ("field_rce", "chain")),
    ("field_rce_activity", "val", ("field_rce", "activity")),
    ("eval_loss", "eval", ("loss",)),
    ("eval_mae", "eval", ("mae",)),
    ("eval_field_rce_chain", "eval", ("field_rce", "chain")),
    ("eval_field_rce_activity", "eval", ("field_rce", "activity")),
    ("eval_uplift_corr", "eval", ("uplift_corr",)),
    ("eval_expected_field_rce_chain", "eval", ("expected", "field_rce", "chain")),
    ("eval_expected_uplift_corr", "eval", ("expected", "uplift_corr")),
)


def _seed_summary(
    runs: list[tuple[dict[str, Any], dict[str, Any] | None]], first_seed: int
) -> dict[str, Any]:
    """Mean, standard deviation (ddof 1) and values of each metric across seeds."""
    out: dict[str, Any] = {"n": len(runs), "seeds": list(range(first_seed, first_seed + len(runs)))}
    for key, split, path in SEED_METRICS:
        values = []
        for val, evals in runs:
            m: Any = val if split == "val" else evals
            for part in path:
                m = None if m is None else m.get(part)
            if m is not None:
                values.append(float(m))
        if len(values) == len(runs):
            out[key] = {
                "mean": float(np.mean(values)),
                "std": float(np.std(values, ddof=1)),
                "values": values,
            }
    return out


def train_reward_variants(
    run_dir: RunDir,
    variants: Sequence[str],
    model_config: RewardModelConfig,
    train_config: RewardTrainConfig,
    log: Callable[[str], None] = print,
    tuned_from: str | None = None,
    extra: dict[str, Any] | None = None,
    seeds: int = 1,
) -> RewardModelDoc:
    """Train each variant (``model_config``'s sizes, the variant's switches), save it,
    evaluate it, and update ``reward_model.json``; returns the updated document.

    ``seeds`` > 1 also trains seeds ``seed + 1 ..`` (not saved) and records each
    metric's mean and standard deviation across all of them under ``"seeds"``.
    """
    if seeds < 1:
        raise ConfigError(f"seeds must be >= 1, got {seeds}")
    names = [check_variant(v) for v in variants]
    data = load_training_data(run_dir, train_config)
    log(
        f"reward samples: {len(data.train):,} training and {len(data.val):,} validation "
        f"requests (by user), {0 if data.eval is None else len(data.eval):,} eval requests, "
        f"{len(data.chains.chains)} chains; {int(data.train.mask.sum()):,} training pairs "
        f"({data.train.mask.mean():.0%} of chains simulated per request)"
    )
    entries: dict[str, Any] = {}
    for name in names:
        config = variant_config(model_config, name)
        log(f"training reward model {name!r} ({config.units} basis unit(s) per block)")
        model, result = fit_reward_model(data, config, train_config, log)
        val, evals = _evaluate_splits(model, data, train_config)
        flops, ratio, _ = overhead(config, data)
        side = save_reward_model(
            run_dir, model, data.features, data.chains, train_config, data.activity_edges,
            {"tuned_from": tuned_from},
        )  # fmt: skip
        entries[name] = {
            "val_loss": val["loss"],
            "mae": val["mae"],
            "field_rce": val["field_rce"],
            # synthetic runs: Field-RCE against E[R], the ground truth (validation users)
            **({"field_rce_expected": val["expected"]["field_rce"]} if "expected" in val else {}),
            "val": val,
            "eval": evals,
            "params": sum(p.numel() for p in model.parameters()),
            "flops_per_request": flops,
            "overhead_flops_ratio": ratio,
            "epochs_run": result.epochs_run,
            "best_epoch": result.best_epoch,
            "train_wall_s": result.wall_s,
            "weights": side["weights"],
            "sha256": side["sha256"],
            "model_config": side["model_config"],
            "train_config": side["train_config"],
            "tuned_from": tuned_from,
            "curve": result.curve,
            "trained_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if seeds > 1:
            # Same data split, other initialisations and batch orders: the spread says
            # which differences between variants are real. The saved model stays the
            # configured seed's, so seeds never select on validation data.
            runs = [(val, evals)]
            for k in range(1, seeds):
                seeded = dataclasses.replace(train_config, seed=train_config.seed + k)
                other, res = fit_reward_model(data, config, seeded, log=lambda _: None)
                runs.append(_evaluate_splits(other, data, seeded))
                log(f"  {name:<12} seed {seeded.seed}: val loss {runs[-1][0]['loss']:.4f} "
                    f"(best epoch {res.best_epoch})")  # fmt: skip
            entries[name]["seeds"] = _seed_summary(runs, train_config.seed)
        entries[name] = _rounded(entries[name])
    previous = run_dir.read_reward_summary()
    variants = {**(previous.variants if previous else {}),
                **{n: RewardVariant.from_json(e) for n, e in entries.items()}}  # fmt: skip
    # The allocator runs the "full" model: its overhead is the headline figure. FLOPs
    # depend on the architecture only, so the saved full config is enough.
    full = variants.get("full")
    full_config = (
        model_config_from_dict(full.model_config)
        if full and full.model_config
        else variant_config(model_config, "full")
    )
    flops, ratio, full_chain = overhead(full_config, data)
    doc = RewardModelDoc(
        variants=variants,
        horizon=read_horizon(run_dir.data),  # what the rewards count
        overhead_flops_ratio=_rounded(ratio),
        overhead_flops_per_request=flops,
        extra={
            **(previous.extra if previous else {}),
            "default_chain": full_chain,
            "loss": train_config.loss,
            "field_rce_rule": FIELD_RCE_RULE,
            "activity_bucket_edges": [float(e) for e in data.activity_edges],
            "data": {
                "train_requests": len(data.train),
                "val_requests": len(data.val),
                "eval_requests": 0 if data.eval is None else len(data.eval),
                "train_users": len(np.unique(data.train.user_id)),
                "val_users": len(np.unique(data.val.user_id)),
                "chains": len(data.chains.chains),
                "train_pairs_fraction": round(float(data.train.mask.mean()), 4),
            },
            "baselines": {"chain_mean": chain_mean_baseline(data, train_config.loss)},
            **(extra or {}),
        },
        key_order=previous.key_order if previous else (),
    )
    run_dir.write_reward_summary(doc)
    return doc


def format_ablation_table(doc: RewardModelDoc) -> str:
    """The analogue of the paper's Table 4: loss, MAE, Field-RCE per variant, val and eval,
    the per-chain-mean baseline, and (with ``--seeds``) the spread across seeds.

    (The clicks column arrives with the allocation work.)
    """

    def num(value: float | None, width: int, digits: int = 4) -> str:
        return f"{'n/a' if value is None else f'{value:.{digits}f}':>{width}}"

    truth = any("expected" in (e.val or {}) for e in doc.variants.values())

    def row(label: str, split: str, m: dict[str, Any], flops: str = "") -> str:
        rce = m["field_rce"]
        exp = m.get("expected") or {}
        on_truth = (f" {num((exp.get('field_rce') or {}).get('chain'), 12)}"
                    f" {num(exp.get('uplift_corr'), 11, 3)}") if truth else ""  # fmt: skip
        return (
            f"{label:<13} {split:<5} {m['loss']:>8.4f} {m['mae']:>7.4f} "
            f"{num(rce['chain'], 10)} {num(rce['activity'], 13)} "
            f"{num(m.get('uplift_corr'), 9, 3)}{on_truth} {flops}"
        )

    lines = [
        f"{'variant':<13} {'split':<5} {'loss':>8} {'MAE':>7} {'RCE chain':>10} "
        f"{'RCE activity':>13} {'uplift r':>9}"
        + (f" {'E[R] RCE ch.':>12} {'E[R] upl. r':>11}" if truth else "")
        + f" {'MFLOPs/req':>11}"
    ]
    variants = {n: e for n in VARIANTS if (e := doc.variants.get(n))}
    for name, entry in variants.items():
        flops = f"{(entry.flops_per_request or 0.0) / 1e6:>11.3f}"
        lines.append(row(name, "val", entry.val or {}, flops))
        if entry.eval:
            lines.append(row(name, "eval", entry.eval))
    for split, m in doc.extra.get("baselines", {}).get("chain_mean", {}).items():
        lines.append(row("chain-mean", split, m))
    seeded = {n: e.extra["seeds"] for n, e in variants.items() if "seeds" in e.extra}
    if seeded:
        keys = [k for k, _, _ in SEED_METRICS if k not in ("mae", "eval_mae")]
        lines += [
            "",
            "mean ± std across seeds (same users split; the saved model is the first seed):",
        ]
        lines.append(f"{'variant':<13} {'n':>2} " + " ".join(f"{k:>23}" for k in keys))
        for name, summary in seeded.items():
            cells = [
                f"{summary[k]['mean']:.4f} ± {summary[k]['std']:.4f}" if k in summary else "n/a"
                for k in keys
            ]
            lines.append(f"{name:<13} {summary['n']:>2} " + " ".join(f"{c:>23}" for c in cells))
    return "\n".join(lines)
