"""Training loop and evaluation of the reward model (DESIGN.md §2, "Reward model").

Loss: Poisson by default (``loss.py`` says why: R_ij is a click count in {0..K} and Q_ij
its mean; on ML-100k 42% of the (request, chain) rewards are 0 and a few reach 10, a
skewed count for which squared error lets the rare high-click requests dominate). MSE is
a switch (``loss: mse``) for comparison; validation always reports both.

Every batch scores all J chains of its requests in one pass (the model shares h_0 and
the model-prefix blocks across chains) and the loss gathers the (request, chain) pairs
that were actually simulated, so sampled-chain data (a fraction of chains per request)
trains exactly like full data.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from greenflow.platform.reward.data import RewardData
from greenflow.platform.reward.encoding import ChainEncoding
from greenflow.platform.reward.loss import LossKind, reward_loss
from greenflow.platform.reward.metrics import bucketize, reward_metrics
from greenflow.platform.reward.model import RewardModel


@dataclass(frozen=True)
class RewardTrainConfig:
    """How the reward model is trained and validated."""

    epochs: int = 60
    batch_size: int = 64  # requests per step (each brings all its simulated chains)
    lr: float = 3e-3
    weight_decay: float = 1e-4  # AdamW, decoupled: ~1.4k training requests overfit fast
    patience: int = 8  # epochs without validation-loss gain before stopping
    loss: LossKind = "poisson"
    val_fraction: float = 0.15  # of reward-split users, held out for early stopping and metrics
    activity_buckets: int = 5  # equal-count buckets of training activity for Field-RCE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be >= 1")
        if self.lr <= 0 or self.weight_decay < 0:
            raise ValueError(
                f"need lr > 0 and weight_decay >= 0, got {self.lr}, {self.weight_decay}"
            )
        if self.loss not in ("poisson", "mse"):
            raise ValueError(f"unknown loss {self.loss!r}; use 'poisson' or 'mse'")


@dataclass
class RewardTrainResult:
    val_loss: float  # best validation loss (the weights left in the model)
    epochs_run: int
    best_epoch: int
    wall_s: float
    curve: list[dict[str, float]] = field(default_factory=list)


def masked_loss(
    q: torch.Tensor, reward: torch.Tensor, mask: torch.Tensor, kind: LossKind
) -> torch.Tensor:
    """Mean loss over the observed (request, chain) pairs: q, reward, mask all (B, J)."""
    return reward_loss(q[mask], reward[mask], kind)  # gather: (n_observed,)


@torch.no_grad()
def predict(
    model: RewardModel, chains: ChainEncoding, data: RewardData, batch_size: int = 512
) -> np.ndarray:
    """Q (N, J) in estimated clicks for every request of ``data`` and every chain."""
    was_training = model.training
    model.eval()
    out = [
        model(data.context(slice(i, i + batch_size)), chains).numpy()
        for i in range(0, len(data), batch_size)
    ]
    model.train(was_training)
    return np.concatenate(out) if out else np.zeros((0, chains.num_chains), np.float32)


def loss_on(pred: np.ndarray, data: RewardData, kind: LossKind) -> float:
    """Mean ``kind`` loss of predictions (N, J) on the observed pairs of ``data``."""
    mask = torch.from_numpy(data.mask)
    return float(masked_loss(torch.from_numpy(pred), torch.from_numpy(data.reward), mask, kind))


def evaluate(
    pred: np.ndarray, data: RewardData, edges: np.ndarray, kind: LossKind
) -> dict[str, Any]:
    """loss (the training ``kind``), both losses, MAE, Field-RCE (chain, activity) and more;
    with expected rewards (synthetic runs) also ``expected``: the same metrics against
    E[R], the ground truth the realised clicks are draws of.

    Poisson loss is Q − R·log Q without the log R! term, so it can be negative; only
    differences between models on the same data mean anything.
    """
    buckets = bucketize(data.activity, edges)
    out = {
        "loss": loss_on(pred, data, kind),
        "poisson_loss": loss_on(pred, data, "poisson"),
        "mse": loss_on(pred, data, "mse"),
        **reward_metrics(pred, data.reward, data.mask, buckets),
    }
    if data.expected is not None:
        out["expected"] = reward_metrics(pred, data.expected, data.mask, buckets)
    return out


def train_reward_model(
    model: RewardModel,
    chains: ChainEncoding,
    train: RewardData,
    val: RewardData,
    config: RewardTrainConfig,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, float]], None] | None = None,
) -> RewardTrainResult:
    """Train on ``train``, early-stop on the validation loss, leave the best weights loaded.

    ``on_epoch`` receives each epoch's metrics (Ray Tune reports them; the loop itself
    knows nothing of Tune). Its ``val_loss`` is the best so far, i.e. the loss of the
    weights this run would return if stopped now.
    """
    if chains.num_chains != train.reward.shape[1] or chains.num_chains != val.reward.shape[1]:
        raise ValueError(
            f"{chains.num_chains} encoded chains but rewards for {train.reward.shape[1]} "
            f"(train) and {val.reward.shape[1]} (validation)"
        )
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    reward, mask = torch.from_numpy(train.reward), torch.from_numpy(train.mask)
    name = model.config.variant
    best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(model.state_dict())
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        perm = rng.permutation(len(train))
        total, pairs = 0.0, 0
        for i in range(0, len(perm), config.batch_size):
            idx = perm[i : i + config.batch_size]
            q = model(train.context(idx), chains)  # (B, J): all chains, one pass
            loss = masked_loss(q, reward[idx], mask[idx], config.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n = int(mask[idx].sum())
            total, pairs = total + loss.item() * n, pairs + n
        val_loss = loss_on(predict(model, chains, val), val, config.loss)
        if val_loss < best_loss:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        row = {
            "epoch": epoch,
            "train_loss": total / max(pairs, 1),
            "epoch_val_loss": val_loss,
            "val_loss": best_loss,
        }
        curve.append(row)
        log(
            f"  {name:<12} epoch {epoch:>3}/{config.epochs}  train {row['train_loss']:.4f}"
            f"  val {val_loss:.4f}{'  *' if best_epoch == epoch else ''}"
            f"  ({time.perf_counter() - t0:.1f} s)"
        )
        if on_epoch is not None:
            on_epoch(row)
        if epoch - best_epoch >= config.patience:
            log(
                f"  {name:<12} early stop: no gain for {config.patience} epochs (best {best_epoch})"
            )
            break
    model.load_state_dict(best_state)
    model.eval()
    return RewardTrainResult(best_loss, epoch, best_epoch, time.perf_counter() - start, curve)
