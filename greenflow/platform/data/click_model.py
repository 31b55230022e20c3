"""The known click model behind the synthetic source (DESIGN.md §3): who clicks what, and why.

A user u with clicks h_1 … h_L (newest last) meets item i. Two affinities, each
standardised to mean 0 and unit variance over random users and items:

  static      s(u, i) = u · v_i                           long-term taste: a cheap
                                                           two-tower model can learn it
  sequential  q(H, i) = max_k (z_{h_k} · z_i + log g_k)   relation of the candidate to
              over the newest m = ``recent`` clicks,      *one* of the newest clicks, in
              g_k = decay^age (newest age 0), then         a latent space of its own:
              standardised by the mean and sd that max     local activation, which mean-
              has for unit-normal dot products (exact,    pooled histories cannot express
              numerical); 0 for an empty history          and history attention can

and the user's **sequential weight** w_u ∈ [0, 1] mixes them, renormalised to unit
variance:

  a(u, H, i) = ((1 − w_u) s + w_u q) / sqrt((1 − w_u)² + w_u²)

A user with w_u = 0 clicks by taste alone (recall and pre-rank find their items); one with
w_u = 1 clicks what relates to something they just clicked (only the rank models can order
that, and the cheap stages rarely pass it on). The click probability is

  p = sigmoid(b + b_u + c_i + β · a(u, H, i))

with c_i = γ · (normal score of i's popularity rank) an item's broad appeal (γ =
``popularity_weight``: popular items are popular partly because they are good), and b =
``log_bias`` for the items a user met in the logged history (which a previous system chose,
so they click often) or b = ``response_bias`` for the items a chain would expose at a
request: the serving response. A request's ground-truth positives are one draw of that
response over the whole corpus (each item independently), so the realised reward of a
chain is a draw whose expectation is exactly its **expected reward**
Σ_{exposed i} p(u, H, i) — the quantity ``oracle-expected`` solves on.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import scipy.stats

from greenflow.platform.data.requests import pad_histories

TRUTH_FILE = "ground_truth.npz"  # in a prepared synthetic dataset's data directory


@dataclass(frozen=True)
class ClickModel:
    """The generating parameters, indexed by dense id (row 0 is padding, all zeros)."""

    user_latent: np.ndarray  # (users + 1, dim) float32: u
    item_latent: np.ndarray  # (items + 1, dim) float32: v (static taste)
    item_seq_latent: np.ndarray  # (items + 1, dim) float32: z (sequential relation)
    user_bias: np.ndarray  # (users + 1,) float32: b_u, logit scale
    item_bias: np.ndarray  # (items + 1,) float32: c_i, logit scale (appeal, from popularity)
    user_seq_weight: np.ndarray  # (users + 1,) float32: w_u in [0, 1]
    item_log_popularity: np.ndarray  # (items + 1,) float64: log exposure share in the log
    click_weight: float  # β
    log_bias: float  # b for logged events
    response_bias: float  # b for a request's exposed items
    recent: int  # m: newest clicks the sequential affinity reads
    recency_decay: float  # g_k = decay^(age of click k), newest age 0

    def recency_weights(self) -> np.ndarray:
        """(m,) g for the newest m clicks, oldest first (the newest gets 1)."""
        return self.recency_decay ** np.arange(self.recent - 1, -1, -1, dtype=np.float64)

    def static_affinity(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """s = u · v for aligned id arrays (broadcasting allowed)."""
        return np.einsum("...d,...d->...", self.user_latent[user_ids], self.item_latent[item_ids])

    @functools.cached_property
    def max_moments(self) -> tuple[float, float]:
        """Mean and sd of max_k (X_k + log g_k) for iid standard normal X_k: the exact
        distribution P(max ≤ x) = Π_k Φ(x − log g_k), integrated on a fine grid."""
        log_g = np.log(self.recency_weights())
        x = np.linspace(-8.0, 8.0, 8001)
        cdf = np.prod(scipy.stats.norm.cdf(x[:, None] - log_g[None, :]), axis=1)
        pdf = np.gradient(cdf, x)
        mean = float(np.trapezoid(x * pdf, x))
        return mean, float(np.sqrt(np.trapezoid((x - mean) ** 2 * pdf, x)))

    def sequential_affinity(self, recent: np.ndarray, item_ids: np.ndarray | None) -> np.ndarray:
        """q (B, n) for the newest clicks ``recent`` (B, m; oldest first, left-padded with
        0) and candidates ``item_ids`` (B, n), or every item (B, N) when None; one (B, n)
        product per history slot, so memory stays O(B · n)."""
        z = self.item_seq_latent
        candidates = (z[1:] if item_ids is None else z[item_ids]).astype(np.float64)
        log_g = np.log(self.recency_weights())[-recent.shape[1] :]
        best = None
        for k in range(recent.shape[1]):
            query = z[recent[:, k]].astype(np.float64)  # (B, dim)
            if item_ids is None:
                dot = query @ candidates.T
            else:
                dot = np.einsum("bd,bnd->bn", query, candidates)
            dot = np.where(recent[:, k : k + 1] > 0, dot + log_g[k], -np.inf)
            best = dot if best is None else np.maximum(best, dot)
        mean, sd = self.max_moments
        assert best is not None
        return np.where(np.isfinite(best), (best - mean) / sd, 0.0)

    def _logit(
        self, user_ids: np.ndarray, s: np.ndarray, q: np.ndarray, c: np.ndarray, bias: float
    ) -> np.ndarray:
        """bias + b_u + c_i + β a from static s, sequential q and item biases c (B, n or 1, n)
        of users (B,)."""
        w = self.user_seq_weight[user_ids].astype(np.float64)[:, None]  # (B, 1)
        mixed = ((1.0 - w) * s + w * q) / np.sqrt((1.0 - w) ** 2 + w**2)
        user = self.user_bias[user_ids].astype(np.float64)[:, None]
        return bias + user + c + self.click_weight * mixed

    def probability(
        self, user_ids: np.ndarray, recent: np.ndarray, item_ids: np.ndarray, bias: float
    ) -> np.ndarray:
        """p (B, n) = sigmoid(bias + b_u + c_i + β a) for users (B,), their newest clicks
        (B, m) and candidates (B, n)."""
        user_ids = np.asarray(user_ids)
        s = np.einsum("bd,bnd->bn", self.user_latent[user_ids], self.item_latent[item_ids])
        q = self.sequential_affinity(recent, item_ids)
        c = self.item_bias[item_ids].astype(np.float64)
        return _sigmoid(self._logit(user_ids, s, q, c, bias))

    def response(self, user_ids: np.ndarray, histories: Sequence[Sequence[int]]) -> np.ndarray:
        """(B, N + 1) probability that each request's user clicks each item if a chain
        exposes it now (column 0, padding, is 0): one (B, dim) × (dim, N) product for the
        taste and one per history slot for the sequential relation."""
        user_ids = np.asarray(user_ids)
        recent = pad_histories(histories, self.recent)
        s = self.user_latent[user_ids].astype(np.float64) @ self.item_latent[1:].T
        q = self.sequential_affinity(recent, None)
        c = self.item_bias[None, 1:].astype(np.float64)
        p = _sigmoid(self._logit(user_ids, s, q, c, self.response_bias))
        return np.concatenate([np.zeros((len(p), 1)), p], axis=1)

    def expected_reward(
        self, user_ids: np.ndarray, histories: Sequence[Sequence[int]], exposed: np.ndarray
    ) -> np.ndarray:
        """(B,) Σ over each row of ``exposed`` (B, K; 0 = nothing exposed) of p."""
        recent = pad_histories(histories, self.recent)
        p = self.probability(np.asarray(user_ids), recent, exposed, self.response_bias)
        return (p * (exposed > 0)).sum(axis=1)

    def save(self, path: Path | BinaryIO) -> None:
        """Write to one ``.npz`` file at exactly ``path`` (no suffix is added), or to an
        open binary file."""
        if isinstance(path, Path):
            with open(path, "wb") as f:
                self.save(f)
            return
        scalars = np.array([self.click_weight, self.log_bias, self.response_bias,
                            self.recent, self.recency_decay])  # fmt: skip
        np.savez(path, user_latent=self.user_latent, item_latent=self.item_latent,
                 item_seq_latent=self.item_seq_latent, user_bias=self.user_bias,
                 item_bias=self.item_bias,
                 user_seq_weight=self.user_seq_weight,
                 item_log_popularity=self.item_log_popularity, scalars=scalars)  # fmt: skip

    @classmethod
    def load(cls, path: Path | BinaryIO) -> ClickModel:
        with np.load(path) as z:
            weight, log_bias, response_bias, recent, decay = z["scalars"].tolist()
            return cls(z["user_latent"], z["item_latent"], z["item_seq_latent"], z["user_bias"],
                       z["item_bias"], z["user_seq_weight"], z["item_log_popularity"], float(weight),
                       float(log_bias), float(response_bias), int(recent), float(decay))  # fmt: skip


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def draw_positives(
    model: ClickModel,
    user_ids: np.ndarray,
    histories: Sequence[Sequence[int]],
    seed: int | Sequence[int],
) -> list[list[int]]:
    """One draw of each request's response: the items it would click, each independently
    with its probability ``model.response`` (item ids ascending)."""
    p = model.response(user_ids, histories)
    clicked = np.random.default_rng(seed).random(p.shape) < p
    return [np.flatnonzero(row).tolist() for row in clicked]
