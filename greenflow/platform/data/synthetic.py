"""Synthetic interactions with known ground truth, sized for scale tests (DESIGN.md §3).

Users and items have latent vectors u, v (unit-variance dot products) and items a Zipf
popularity. Each user has a lognormal number of events (heavy-tailed activity). An event
picks an item with probability ∝ exp(popularity + a·u·v) and is clicked with probability
sigmoid(c·u·v + user bias + click bias). Timestamps are strictly increasing per user.

Sampling uses sampling-importance-resampling so that it scales: each user gets a pool of
``candidates + pool_per_event · events`` items drawn by popularity (inverse CDF), and each
event picks from the pool ∝ exp(a·u·v). As the pool grows this tends to the exact
distribution; it costs O(pool · dim) per user instead of O(items · dim). Because a user's
events share one pool, repeat items per user run a little above the exact model's (about
33% of events vs 28% at the defaults).

Users are generated in chunks of ``USER_CHUNK`` with a random stream per chunk, so the
output depends only on the config and peak memory stays close to the output tables.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from greenflow.platform.data.requests import RequestConfig, build_requests
from greenflow.platform.data.schema import CanonicalDataset

NAME = "synthetic"
USER_CHUNK = 4096  # users per generation chunk; part of the output's definition, keep fixed
PILOT_USERS = 4000
REQUEST_MARGIN = 0.03  # extra users so a run makes at least the requested number of requests


@dataclass(frozen=True)
class SyntheticConfig:
    """Sizes and generative parameters; the same config always gives the same data."""

    users: int = 10_000
    items: int = 5_000
    dim: int = 16
    mean_events: float = 30.0  # mean interactions (clicked or not) per user
    activity_sigma: float = 1.0  # lognormal sigma of events per user; 0 = all alike
    min_events: int = 2  # bounds on events per user, after the lognormal draw
    max_events: int = 5_000
    popularity_skew: float = 1.0  # Zipf exponent of item exposure share
    affinity_weight: float = 1.0  # weight of u·v in which items a user meets
    click_weight: float = 2.0  # weight of u·v in the click logit
    click_bias: float = -2.5  # click logit offset; sets the overall click rate
    user_bias_std: float = 0.5  # per-user click propensity, logit scale
    candidates: int = 256  # popularity-drawn pool per user: candidates + pool_per_event·events
    pool_per_event: int = 4
    segments: int = 8  # user feature: argmax of a projection of u
    regions: int = 16  # user feature: noisy argmax of another projection of u
    categories: int = 32  # item feature: argmax of a projection of v
    brands: int = 256  # item feature: argmax of another projection of v
    span_s: int = 30 * 86_400  # time window the events fall in, seconds
    start_ts: int = 1_600_000_000  # first possible timestamp, unix seconds
    seed: int = 0

    def __post_init__(self) -> None:
        positive = ("users", "items", "dim", "min_events", "candidates", "segments", "regions")
        for name in (*positive, "categories", "brands"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.mean_events <= 0 or self.activity_sigma < 0 or self.user_bias_std < 0:
            raise ValueError("mean_events must be > 0, activity_sigma and user_bias_std >= 0")
        if self.pool_per_event < 0:
            raise ValueError(f"pool_per_event must be >= 0, got {self.pool_per_event}")
        if self.max_events < self.min_events:
            raise ValueError(f"max_events {self.max_events} < min_events {self.min_events}")
        if self.span_s < self.max_events:
            raise ValueError("span_s must be >= max_events (timestamps are distinct seconds)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class GroundTruth:
    """The generating parameters, indexed by dense id (row 0 is padding, all zeros)."""

    user_latent: np.ndarray  # (users + 1, dim) float32
    item_latent: np.ndarray  # (items + 1, dim) float32
    user_bias: np.ndarray  # (users + 1,) float32, click logit offset
    item_log_popularity: np.ndarray  # (items + 1,) float64, log exposure share at zero affinity
    click_weight: float
    click_bias: float

    def affinity(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """u·v for aligned id arrays (broadcasting allowed)."""
        return np.einsum("...d,...d->...", self.user_latent[user_ids], self.item_latent[item_ids])

    def click_probability(self, user_ids: np.ndarray, item_ids: np.ndarray) -> np.ndarray:
        """P(click | user meets item) for aligned id arrays."""
        logit = (
            self.click_weight * self.affinity(user_ids, item_ids)
            + self.user_bias[user_ids]
            + self.click_bias
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def save(self, path: Path) -> None:
        """Write to one ``.npz`` file at exactly ``path`` (no suffix is added)."""
        with open(path, "wb") as f:
            np.savez(
                f,
                user_latent=self.user_latent,
                item_latent=self.item_latent,
                user_bias=self.user_bias,
                item_log_popularity=self.item_log_popularity,
                click=np.array([self.click_weight, self.click_bias]),
            )

    @classmethod
    def load(cls, path: Path) -> GroundTruth:
        with np.load(path) as z:
            click = z["click"]
            return cls(
                user_latent=z["user_latent"],
                item_latent=z["item_latent"],
                user_bias=z["user_bias"],
                item_log_popularity=z["item_log_popularity"],
                click_weight=float(click[0]),
                click_bias=float(click[1]),
            )


def _padded(rows: np.ndarray) -> np.ndarray:
    """Prepend a zero row so arrays index by dense id."""
    return np.concatenate([np.zeros((1, *rows.shape[1:]), dtype=rows.dtype), rows])


def _argmax_code(latent: np.ndarray, n_codes: int, rng: np.random.Generator) -> np.ndarray:
    """Category codes 1..n_codes: argmax of a random linear projection of the latents."""
    projection = rng.normal(size=(latent.shape[1], n_codes)).astype(np.float32)
    return (np.argmax(latent @ projection, axis=1) + 1).astype(np.int64)


def _events_per_user(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    sigma = config.activity_sigma
    scale = np.exp(rng.normal(-0.5 * sigma**2, sigma, size=config.users))  # mean 1
    events = np.rint(config.mean_events * scale)
    return np.clip(events, config.min_events, config.max_events).astype(np.int32)


def _generate_chunk(
    config: SyntheticConfig,
    rng: np.random.Generator,
    user_latent: np.ndarray,  # (B, dim) float32
    user_bias: np.ndarray,  # (B,) float32
    events: np.ndarray,  # (B,) int32
    item_latent: np.ndarray,  # (items, dim) float32
    popularity_cdf: np.ndarray,  # (items,) float64
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items (0-based), timestamps and labels of one user chunk's events, user-major."""
    n_users = len(events)
    pool_size = config.candidates + config.pool_per_event * events.astype(np.int64)
    pool_owner = np.repeat(np.arange(n_users, dtype=np.int32), pool_size)  # (P,)
    pool_start = np.concatenate([[0], np.cumsum(pool_size)[:-1]])
    pool_items = np.searchsorted(popularity_cdf, rng.random(len(pool_owner)), side="right")
    pool_items = np.minimum(pool_items, len(popularity_cdf) - 1).astype(np.int32)
    # (P, dim) product, summed in place: the chunk's largest temporary
    product = item_latent[pool_items]
    product *= user_latent[pool_owner]
    affinity = product.sum(axis=1)
    del product

    weight = np.exp(config.affinity_weight * affinity.astype(np.float64))
    cum = np.cumsum(weight)
    row_total = np.add.reduceat(weight, pool_start)
    row_before = cum[pool_start] - weight[pool_start]
    del weight

    # inverse CDF inside each user's pool: one uniform per event, one global searchsorted
    owner = np.repeat(np.arange(n_users, dtype=np.int32), events)  # (E,)
    target = row_before[owner] + rng.random(len(owner)) * row_total[owner]
    pick = np.searchsorted(cum, target, side="right")
    pick = np.clip(pick, pool_start[owner], pool_start[owner] + pool_size[owner] - 1)
    items = pool_items[pick]
    logit = config.click_weight * affinity[pick] + user_bias[owner] + config.click_bias
    labels = (rng.random(len(owner)) < 1.0 / (1.0 + np.exp(-logit))).astype(np.int8)

    # sorted random seconds in [0, span - n], plus the event's rank: strictly increasing
    room = (config.span_s - events[owner] + 1).astype(np.int64)
    base = owner.astype(np.int64) * config.span_s
    key = base + (rng.random(len(owner)) * room).astype(np.int64)
    key.sort()  # user blocks do not overlap, so this sorts within each user only
    event_start = np.concatenate([[0], np.cumsum(events, dtype=np.int64)[:-1]])
    rank = np.arange(len(owner), dtype=np.int64) - event_start[owner]
    ts = key - base + rank + config.start_ts
    return items, ts, labels


def generate(config: SyntheticConfig) -> tuple[CanonicalDataset, GroundTruth]:
    """Interactions (sorted by user, ts), users and items, and the parameters behind them."""
    item_rng = np.random.default_rng([config.seed, 0])
    user_rng = np.random.default_rng([config.seed, 1])
    latent_scale = config.dim**-0.25  # so u·v has unit variance

    item_latent = item_rng.normal(0.0, latent_scale, (config.items, config.dim))
    item_latent = item_latent.astype(np.float32)
    rank = item_rng.permutation(config.items) + 1
    log_popularity = -config.popularity_skew * np.log(rank)
    peak = log_popularity.max()
    log_popularity -= peak + np.log(np.exp(log_popularity - peak).sum())  # log-softmax
    popularity_cdf = np.cumsum(np.exp(log_popularity))
    popularity_cdf /= popularity_cdf[-1]
    items = pd.DataFrame(
        {
            "item_id": np.arange(1, config.items + 1, dtype=np.int64),
            "raw_id": np.arange(1, config.items + 1, dtype=np.int64),
            "category": _argmax_code(item_latent, config.categories, item_rng),
            "brand": _argmax_code(item_latent, config.brands, item_rng),
        }
    )

    user_latent = user_rng.normal(0.0, latent_scale, (config.users, config.dim))
    user_latent = user_latent.astype(np.float32)
    user_bias = user_rng.normal(0.0, config.user_bias_std, config.users).astype(np.float32)
    events = _events_per_user(config, user_rng)
    noisy = user_latent + user_rng.normal(0.0, latent_scale, user_latent.shape).astype(np.float32)
    users = pd.DataFrame(
        {
            "user_id": np.arange(1, config.users + 1, dtype=np.int64),
            "raw_id": np.arange(1, config.users + 1, dtype=np.int64),
            "segment": _argmax_code(user_latent, config.segments, user_rng),
            "region": _argmax_code(noisy, config.regions, user_rng),
        }
    )
    del noisy

    # the output arrays are allocated once and filled chunk by chunk (no concatenation copy)
    total = int(events.sum(dtype=np.int64))
    out_user = np.repeat(np.arange(1, config.users + 1, dtype=np.int64), events)
    out_item = np.empty(total, dtype=np.int64)
    out_ts = np.empty(total, dtype=np.int64)
    out_label = np.empty(total, dtype=np.int8)
    offset = 0
    for chunk, start in enumerate(range(0, config.users, USER_CHUNK)):
        stop = min(start + USER_CHUNK, config.users)
        chunk_items, chunk_ts, chunk_labels = _generate_chunk(
            config,
            np.random.default_rng([config.seed, 2, chunk]),
            user_latent[start:stop],
            user_bias[start:stop],
            events[start:stop],
            item_latent,
            popularity_cdf,
        )
        end = offset + len(chunk_items)
        out_item[offset:end] = chunk_items + 1
        out_ts[offset:end] = chunk_ts
        out_label[offset:end] = chunk_labels
        offset = end

    interactions = pd.DataFrame(
        {"user_id": out_user, "item_id": out_item, "ts": out_ts, "label": out_label},
        copy=False,
    )
    truth = GroundTruth(
        user_latent=_padded(user_latent),
        item_latent=_padded(item_latent),
        user_bias=_padded(user_bias),
        item_log_popularity=_padded(log_popularity),
        click_weight=config.click_weight,
        click_bias=config.click_bias,
    )
    return CanonicalDataset(NAME, interactions, users, items).validate(), truth


def config_for_requests(
    requests: int,
    requests_per_user: int = 6,
    min_history: int = 1,
    **overrides: Any,
) -> SyntheticConfig:
    """A config whose data yields at least ``requests`` requests under the given request rules.

    The number of users is derived from a small pilot run with the same parameters: not
    every user reaches ``requests_per_user`` (few events, or a late first click).
    """
    if requests < 1:
        raise ValueError("requests must be >= 1")
    if "users" in overrides:
        raise ValueError("users is derived from requests; pass one or the other")
    unknown = set(overrides) - {f.name for f in fields(SyntheticConfig)}
    if unknown:
        raise ValueError(f"unknown SyntheticConfig field(s) {sorted(unknown)}")
    pilot_config = SyntheticConfig(users=PILOT_USERS, **overrides)
    pilot, _ = generate(pilot_config)
    request_config = RequestConfig(requests_per_user=requests_per_user, min_history=min_history)
    log = build_requests(pilot.interactions, pilot.users["user_id"].to_numpy(), request_config)
    per_user = len(log) / PILOT_USERS
    if per_user == 0:
        raise ValueError(
            f"no user reaches min_history={min_history} clicks with these parameters; "
            "raise mean_events or click_bias"
        )
    users = math.ceil(requests / per_user * (1 + REQUEST_MARGIN))
    return replace(pilot_config, users=users)
