"""Training samples, the training loop and AUC for the cascade models.

Samples: every interaction of the chosen users is an event with the user's context at
that moment (features, clicks strictly before it). Each event's own item carries the
event's label (click = 1, rated but not clicked = 0), and ``negatives`` items are added
as label 0, because the cascade ranks the whole corpus, not only items the user happened
to rate. Training redraws the negatives every epoch from a ``NegativeSampler`` (uniform
for recall; the previous stage's candidates mixed with the corpus for later stages:
``negatives.py``). Validation draws its negatives once with a fixed seed, so every model
is judged on the same pairs.

Models that read item-to-item features (``item_graph.py``) train with cross-fitting: a
batch holds the events of one fold of cascade-training users and reads the graph counted
without that fold (``CrossFit``), so no event sees its own label or its user's future
through the graph; validation and serving read the graph of all cascade-training users.
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
from greenflow.platform.models.item_stats import ItemGraphs
from greenflow.platform.models.negatives import NegativeSampler, UniformNegatives


@dataclass(frozen=True)
class CascadeTrainConfig:
    """Training settings shared by the model pool."""

    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-6
    negatives: int = 16  # negatives per event, redrawn every epoch
    loss: str = "softmax"  # "softmax" (listwise over own item + negatives) or "bce"
    # Share of a later stage's negatives drawn from the previous stage's candidates.
    hard_fraction: float = 0.5
    patience: int = 2  # epochs without validation-AUC gain before stopping
    max_events: int = 2_000_000  # cap on training events (large synthetic sets)
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"loss {self.loss!r}: expected one of {LOSSES}")


LOSSES: tuple[str, ...] = ("softmax", "bce")


def event_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str) -> torch.Tensor:
    """Mean loss of a batch of events: logits/labels (B, 1+neg), the event's own item first.

    ``bce``: every (event, item) pair is a binary example. ``softmax``: a click event is a
    listwise example, −log softmax(logits)[own item] over its own item and its negatives,
    which is what ranking the head of a list needs (sampled softmax); a rated-but-not-
    clicked event has no positive, so it contributes BCE on its own item only.
    """
    if kind == "bce":
        return nn.functional.binary_cross_entropy_with_logits(logits, labels)
    clicked = labels[:, 0] > 0
    listwise = logits.logsumexp(dim=1) - logits[:, 0]  # (B,) −log softmax of own item
    not_clicked = nn.functional.softplus(logits[:, 0])  # BCE with label 0
    return torch.where(clicked, listwise, not_clicked).mean()


@dataclass
class Samples:
    """Events with contexts: users (E,), user_feats (E, F_u), history (E, L),
    items/labels (E, 1+neg) with the event's own item first."""

    users: np.ndarray
    user_feats: np.ndarray
    history: np.ndarray
    items: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.items)

    def with_negatives(self, negatives: np.ndarray) -> Samples:
        """A copy whose negatives (columns 1..) are ``negatives`` (E, neg)."""
        items = np.concatenate([self.items[:, :1], negatives], axis=1)
        labels = np.zeros(items.shape, dtype=np.float32)
        labels[:, 0] = self.labels[:, 0]
        return Samples(self.users, self.user_feats, self.history, items, labels)


@dataclass(frozen=True)
class CrossFit:
    """Cross-fitted item graphs: event e reads ``graphs[event_fold[e]]`` while training,
    ``full`` (all cascade-training users) for validation and afterwards."""

    event_fold: np.ndarray  # (E,) fold of each training event's user
    graphs: list[ItemGraphs]
    full: ItemGraphs


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
    return Samples(users, user_table[users], history, cand, lab)


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


def _batches(
    rng: np.random.Generator, events: int, batch_size: int, fold: np.ndarray | None
) -> list[tuple[int, np.ndarray]]:
    """Shuffled (fold, event indices) batches; each batch within one fold when ``fold``."""
    if fold is None:
        perm = rng.permutation(events)
        return [(-1, perm[i : i + batch_size]) for i in range(0, events, batch_size)]
    out = []
    for f in np.unique(fold):
        idx = rng.permutation(np.flatnonzero(fold == f))
        out += [(int(f), idx[i : i + batch_size]) for i in range(0, len(idx), batch_size)]
    return [out[i] for i in rng.permutation(len(out))]


def train_model(
    model: CascadeModel,
    train: Samples,
    val: Samples,
    config: CascadeTrainConfig,
    log: Callable[[str], None] = print,
    sampler: NegativeSampler | None = None,
    crossfit: CrossFit | None = None,
) -> TrainResult:
    """Train (``config.loss``), early-stop on validation AUC, leave the best weights loaded.

    ``sampler`` draws every epoch's negatives (default: uniform over the corpus);
    ``crossfit`` is required exactly when the model reads item-to-item features.
    """
    if (crossfit is not None) != (model.graph is not None):
        raise ValueError(f"{type(model).__name__}: pass crossfit exactly when the model reads "
                         "item-to-item features")  # fmt: skip
    sampler = sampler or UniformNegatives(model.features.num_items)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    name = type(model).__name__
    best_auc, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    curve: list[dict[str, float]] = []
    start = time.perf_counter()
    epoch = 0
    everyone = np.arange(len(train))
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        # fresh negatives every epoch: more distinct negatives for the same events
        train.items[:, 1:] = sampler.sample(rng, everyone, train.items.shape[1] - 1)
        total_loss = 0.0
        fold = crossfit.event_fold if crossfit is not None else None
        for f, idx in _batches(rng, len(train), config.batch_size, fold):
            if crossfit is not None and model.graph is not None:
                model.graph.load(crossfit.graphs[f])  # the graphs counted without fold f
            ctx = make_context(train.user_feats[idx], train.history[idx])
            logits = model(ctx, torch.from_numpy(train.items[idx]))  # (B, 1+neg)
            loss = event_loss(logits, torch.from_numpy(train.labels[idx]), config.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total_loss += loss.item() * len(idx)
        if crossfit is not None and model.graph is not None:
            model.graph.load(crossfit.full)
        val_auc = auc(val.labels, predict(model, val))
        curve.append({"epoch": epoch, "loss": total_loss / len(train), "val_auc": val_auc})
        log(
            f"  {name:<11} epoch {epoch}/{config.epochs}  loss {total_loss / len(train):.4f}"
            f"  val_auc {val_auc:.4f}  ({time.perf_counter() - t0:.1f} s)"
        )
        if val_auc > best_auc:
            best_auc, best_epoch, best_state = val_auc, epoch, copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(best_auc, epoch, best_epoch, time.perf_counter() - start, curve)
