"""Synthetic interactions with a known click model, sized for scale tests (DESIGN.md §3).

The click model (``click_model.py``) mixes, per user, a static taste u · v that a
two-tower model can learn and a sequential relation of the candidate to the user's newest
clicks that only history-attention / sequence models capture; the user's sequential
weight w_u ~ Beta(``seq_weight_alpha``, ``seq_weight_beta``) sets the mix, so computation
pays for some users and not for others, for a reason.

The log: users and items have latent vectors and items a Zipf popularity; each user has a
lognormal number of events (heavy-tailed activity). An event meets an item: with
probability ``follow_prob`` · w_u one of the ``seq_neighbours`` items closest (in the
sequential space) to the user's last click — browsing on from what they just saw —
otherwise an item drawn ∝ exp(popularity + a · u · v). It is clicked with the click
model's probability at the *log* bias given the user's clicks so far. Timestamps are
strictly increasing per user.

Taste draws use sampling-importance-resampling so that they scale: each user gets a pool
of ``candidates + pool_per_event · events`` items drawn by popularity (inverse CDF), and
each event picks from the pool ∝ exp(a·u·v); O(pool · dim) per user instead of
O(items · dim). Clicks depend on earlier clicks, so a chunk of users is stepped through
event ranks together (vectorised over users).

Requests of a synthetic run get as positives one draw of the click model's *response* at
the request time (``click_model.draw_positives``), so the realised reward of a chain has
the chain's expected reward as its expectation; ``ground_truth.npz`` beside the tables
lets the simulation compute that expectation exactly.

Users are generated in chunks of ``USER_CHUNK`` with a random stream per chunk, so the
output depends only on the config and peak memory stays close to the output tables.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.stats

from greenflow.errors import ConfigError
from greenflow.platform.data.click_model import ClickModel
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
    items: int = 2_000
    dim: int = 8
    mean_events: float = 60.0  # mean interactions (clicked or not) per user
    activity_sigma: float = 1.0  # lognormal sigma of events per user; 0 = all alike
    min_events: int = 2  # bounds on events per user, after the lognormal draw
    max_events: int = 5_000
    popularity_skew: float = 1.0  # Zipf exponent of item exposure share
    affinity_weight: float = 1.0  # weight of u·v in which items a user meets
    click_weight: float = 2.5  # β: weight of the mixed affinity in the click logit
    click_bias: float = -3.0  # logit offset of logged events; sets the log's click rate
    # Logit offset of a request's exposed items: sets how many items a user would click if
    # shown (a few per request out of thousands; the best ten hold most of them).
    response_bias: float = -9.0
    user_bias_std: float = 0.5  # per-user click propensity, logit scale
    # γ: weight of an item's popularity (rank normal score) in its click logit (broad appeal);
    # 0 = popularity only decides what users meet, not what they click.
    popularity_weight: float = 0.5
    # w_u ~ Beta(alpha, beta): the share of a user's clicks driven by their recent history.
    # 0.5/0.5 is U-shaped: many users almost purely static or purely sequential.
    seq_weight_alpha: float = 0.5
    seq_weight_beta: float = 0.5
    recent_clicks: int = 5  # m: newest clicks the sequential affinity reads
    recency_decay: float = 0.7  # weight of a click relative to the next newer one
    follow_prob: float = 0.6  # × w_u: chance an event follows on from the last click
    seq_neighbours: int = 50  # items an event that follows on can meet
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
        if self.seq_weight_alpha <= 0 or self.seq_weight_beta <= 0:
            raise ValueError("seq_weight_alpha and seq_weight_beta must be > 0 (a Beta law)")
        if self.recent_clicks < 1 or self.seq_neighbours < 1:
            raise ValueError("recent_clicks and seq_neighbours must be >= 1")
        if not 0.0 < self.recency_decay <= 1.0 or not 0.0 <= self.follow_prob <= 1.0:
            raise ValueError("recency_decay must be in (0, 1] and follow_prob in [0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _padded(rows: np.ndarray) -> np.ndarray:
    """Prepend a zero row so arrays index by dense id."""
    return np.concatenate([np.zeros((1, *rows.shape[1:]), dtype=rows.dtype), rows])


def _argmax_code(latent: np.ndarray, n_codes: int, rng: np.random.Generator) -> np.ndarray:
    """Category codes 1..n_codes: argmax of a random linear projection of the latents."""
    projection = rng.normal(size=(latent.shape[1], n_codes)).astype(np.float32)
    return (np.argmax(latent @ projection, axis=1) + 1).astype(np.int64)


def _appeal(log_popularity: np.ndarray, weight: float) -> np.ndarray:
    """(items,) float32 c_i = weight · the normal score of i's popularity rank: standard
    normal in distribution (a Zipf log popularity itself would give the head items +6 sd)."""
    order = np.argsort(np.argsort(log_popularity, kind="stable"), kind="stable")
    score = scipy.stats.norm.ppf((order + 0.5) / len(order))
    return (weight * score / score.std()).astype(np.float32)


def _events_per_user(config: SyntheticConfig, rng: np.random.Generator) -> np.ndarray:
    sigma = config.activity_sigma
    scale = np.exp(rng.normal(-0.5 * sigma**2, sigma, size=config.users))  # mean 1
    events = np.rint(config.mean_events * scale)
    return np.clip(events, config.min_events, config.max_events).astype(np.int32)


def _sequential_neighbours(item_seq_latent: np.ndarray, k: int, rows: int = 1024) -> np.ndarray:
    """(items, k) the k items closest to each item in the sequential space (0-based, self
    excluded, ties to the smaller id), computed ``rows`` items at a time."""
    n = len(item_seq_latent)
    k = min(k, n - 1)
    out = np.empty((n, k), dtype=np.int32)
    for start in range(0, n, rows):
        sim = item_seq_latent[start : start + rows] @ item_seq_latent.T  # (r, items)
        sim[np.arange(len(sim)), np.arange(start, start + len(sim))] = -np.inf
        part = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        order = np.lexsort((part, -np.take_along_axis(sim, part, axis=1)), axis=1)
        out[start : start + rows] = np.take_along_axis(part, order, axis=1)
    return out


def _taste_picks(
    config: SyntheticConfig,
    rng: np.random.Generator,
    user_latent: np.ndarray,  # (B, dim) float32
    events: np.ndarray,  # (B,) int32
    item_latent: np.ndarray,  # (items, dim) float32
    popularity_cdf: np.ndarray,  # (items,) float64
) -> np.ndarray:
    """Items (0-based, user-major) each event would meet by taste: ∝ exp(pop + a·u·v)."""
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
    return pool_items[pick]


def _generate_chunk(
    config: SyntheticConfig,
    rng: np.random.Generator,
    users: np.ndarray,  # (B,) dense user ids of the chunk
    events: np.ndarray,  # (B,) int32
    truth: ClickModel,
    popularity_cdf: np.ndarray,  # (items,) float64
    neighbours: np.ndarray,  # (items, k) int32, 0-based
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Items (1-based), timestamps and labels of one user chunk's events, user-major."""
    n_users = len(events)
    items = _taste_picks(config, rng, truth.user_latent[users], events, truth.item_latent[1:],
                         popularity_cdf) + 1  # fmt: skip
    owner = np.repeat(np.arange(n_users, dtype=np.int64), events)  # (E,)
    follow = rng.random(len(owner)) < config.follow_prob * truth.user_seq_weight[users][owner]
    hop = rng.integers(0, neighbours.shape[1], len(owner))
    coin = rng.random(len(owner))
    labels = np.zeros(len(owner), dtype=np.int8)
    start = np.concatenate([[0], np.cumsum(events, dtype=np.int64)[:-1]])
    recent = np.zeros((n_users, truth.recent), dtype=np.int64)  # newest clicks, oldest first
    # Clicks depend on earlier clicks: step the chunk's users through event ranks together.
    for rank in range(int(events.max(initial=0))):
        active = np.flatnonzero(events > rank)
        e = start[active] + rank
        last = recent[active, -1]
        hops = follow[e] & (last > 0)  # browse on from the last click
        items[e[hops]] = neighbours[last[hops] - 1, hop[e[hops]]] + 1
        p = truth.probability(users[active], recent[active], items[e][:, None], config.click_bias)
        clicked = coin[e] < p[:, 0]
        labels[e] = clicked
        rows = active[clicked]
        recent[rows, :-1] = recent[rows, 1:]
        recent[rows, -1] = items[e[clicked]]

    # sorted random seconds in [0, span - n], plus the event's rank: strictly increasing
    room = (config.span_s - events[owner] + 1).astype(np.int64)
    base = owner * config.span_s
    key = base + (rng.random(len(owner)) * room).astype(np.int64)
    key.sort()  # user blocks do not overlap, so this sorts within each user only
    rank_of = np.arange(len(owner), dtype=np.int64) - start[owner]
    ts = key - base + rank_of + config.start_ts
    return items, ts, labels


def generate(config: SyntheticConfig) -> tuple[CanonicalDataset, ClickModel]:
    """Interactions (sorted by user, ts), users and items, and the click model behind them."""
    item_rng = np.random.default_rng([config.seed, 0])
    user_rng = np.random.default_rng([config.seed, 1])
    latent_scale = config.dim**-0.25  # so dot products of latents have unit variance

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
    # drawn after the item features so that adding them changed no earlier stream
    seq_latent = item_rng.normal(0.0, latent_scale, (config.items, config.dim)).astype(np.float32)

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
    seq_weight = user_rng.beta(config.seq_weight_alpha, config.seq_weight_beta, config.users)
    truth = ClickModel(
        user_latent=_padded(user_latent),
        item_latent=_padded(item_latent),
        item_seq_latent=_padded(seq_latent),
        user_bias=_padded(user_bias),
        item_bias=_padded(_appeal(log_popularity, config.popularity_weight)),
        user_seq_weight=_padded(seq_weight.astype(np.float32)),
        item_log_popularity=_padded(log_popularity),
        click_weight=config.click_weight,
        log_bias=config.click_bias,
        response_bias=config.response_bias,
        recent=config.recent_clicks,
        recency_decay=config.recency_decay,
    )
    neighbours = _sequential_neighbours(seq_latent, config.seq_neighbours)

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
            np.arange(start + 1, stop + 1, dtype=np.int64),
            events[start:stop],
            truth,
            popularity_cdf,
            neighbours,
        )
        end = offset + len(chunk_items)
        out_item[offset:end] = chunk_items
        out_ts[offset:end] = chunk_ts
        out_label[offset:end] = chunk_labels
        offset = end

    interactions = pd.DataFrame(
        {"user_id": out_user, "item_id": out_item, "ts": out_ts, "label": out_label},
        copy=False,
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
        raise ConfigError("requests must be >= 1")
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
        raise ConfigError(
            f"no user reaches min_history={min_history} clicks with these parameters; "
            "raise mean_events or click_bias"
        )
    users = math.ceil(requests / per_user * (1 + REQUEST_MARGIN))
    return replace(pilot_config, users=users)
