"""Training samples, the training loop and AUC for the cascade models.

Samples: every interaction of the chosen users is an event with the user's context at
that moment (features, clicks strictly before it). Each event's own item carries the
event's label (click = 1, rated but not clicked = 0), and ``negatives`` items drawn
uniformly from the corpus are added as label 0, because the cascade ranks the whole
corpus, not only items the user happened to rate. Validation draws its negatives once
with a fixed seed, so every model is judged on the same pairs.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from torch import nn

from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import FeatureSet, make_context


@dataclass(frozen=True)
class CascadeTrainConfig:
    """Training settings shared by the model pool."""

    epochs: int = 15
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-6
    negatives: int = 4  # uniform corpus negatives per event
    patience: int = 3  # epochs without validation-AUC gain before stopping
    max_events: int = 2_000_000  # cap on training events (large synthetic sets)
    seed: int = 0


@dataclass
class Samples:
    """Events with contexts: user_feats (E, F_u), history (E, L), items/labels (E, 1+neg)."""

    user_feats: np.ndarray
    history: np.ndarray
    items: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.items)


def build_samples(
    interactions: pd.DataFrame,
    user_table: np.ndarray,
    user_ids: np.ndarray,
    features: FeatureSet,
    negatives: int,
    seed: int,
    max_events: int | None = None,
) -> Samples:
    """Events of ``user_ids`` with their contexts and ``negatives`` uniform negatives each."""
    frame = interactions[interactions["user_id"].isin(user_ids)]
    frame = frame.sort_values(["user_id", "ts", "item_id"], kind="stable")
    rng = np.random.default_rng(seed)
    if max_events is not None and len(frame) > max_events:
        frame = frame.iloc[np.sort(rng.choice(len(frame), max_events, replace=False))]
    users = frame["user_id"].to_numpy()
    items = frame["item_id"].to_numpy()
    ts = frame["ts"].to_numpy()
    labels = frame["label"].to_numpy()
    length = features.max_history
    history = np.zeros((len(frame), length), dtype=np.int64)
    bounds = np.flatnonzero(np.diff(users)) + 1
    for a, b in zip(np.r_[0, bounds], np.r_[bounds, len(frame)], strict=True):
        click = labels[a:b] == 1
        click_items, click_ts = items[a:b][click], ts[a:b][click]
        n_before = np.searchsorted(click_ts, ts[a:b], side="left")  # clicks strictly before
        for e, n in enumerate(n_before):
            tail = click_items[max(0, n - length) : n]
            if len(tail):
                history[a + e, length - len(tail) :] = tail
    cand = np.empty((len(frame), 1 + negatives), dtype=np.int64)
    cand[:, 0] = items
    cand[:, 1:] = rng.integers(1, features.num_items + 1, size=(len(frame), negatives))
    lab = np.zeros_like(cand, dtype=np.float32)
    lab[:, 0] = labels
    return Samples(user_table[users], history, cand, lab)


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney, ties get average ranks)."""
    labels = np.asarray(labels).ravel().astype(bool)
    scores = np.asarray(scores).ravel().astype(np.float64)
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both positive and negative labels")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores))
    # average rank within each run of tied scores
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_scores)) + 1]
    ends = np.r_[starts[1:], len(scores)]
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@torch.no_grad()
def predict(model: CascadeModel, samples: Samples, batch_size: int = 1024) -> np.ndarray:
    """Logits (E, 1+neg) for all samples."""
    model.eval()
    out = []
    for i in range(0, len(samples), batch_size):
        sl = slice(i, i + batch_size)
        ctx = make_context(samples.user_feats[sl], samples.history[sl])
        out.append(model(ctx, torch.from_numpy(samples.items[sl])).numpy())
    return np.concatenate(out) if out else np.zeros((0, samples.items.shape[1]), np.float32)


@dataclass
class TrainResult:
    val_auc: float
    epochs_run: int
    best_epoch: int
    wall_s: float
    curve: list[dict[str, float]] = field(default_factory=list)


def train_model(
    model: CascadeModel,
    train: Samples,
    val: Samples,
    config: CascadeTrainConfig,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train with BCE, early-stop on validation AUC, and leave the best weights loaded."""
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    loss_fn = nn.BCEWithLogitsLoss()
    name = type(model).__name__
    best_auc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        # fresh uniform negatives every epoch: more distinct negatives for the same events
        train.items[:, 1:] = rng.integers(1, model.features.num_items + 1, train.items[:, 1:].shape)
        perm = rng.permutation(len(train))
        total_loss = 0.0
        for i in range(0, len(perm), config.batch_size):
            idx = perm[i : i + config.batch_size]
            ctx = make_context(train.user_feats[idx], train.history[idx])
            logits = model(ctx, torch.from_numpy(train.items[idx]))  # (B, 1+neg)
            loss = loss_fn(logits, torch.from_numpy(train.labels[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
        val_auc = auc(val.labels, predict(model, val))
        curve.append({"epoch": epoch, "loss": total_loss / len(perm), "val_auc": val_auc})
        log(
            f"  {name:<11} epoch {epoch}/{config.epochs}  loss {total_loss / len(perm):.4f}"
            f"  val_auc {val_auc:.4f}  ({time.perf_counter() - t0:.1f} s)"
        )
        if val_auc > best_auc:
            best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_auc, epoch, best_epoch, time.perf_counter() - start, curve)
