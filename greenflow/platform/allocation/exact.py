"""Exact solve of the window problem (3) through its dual (8)–(12) (DESIGN.md §2, "Exact solve").

    max Σ_i Q_{i,j(i)}  s.t.  Σ_i q_{i,j(i)} ≤ C          dual: min_{λ≥0} λC + Σ_i max_j (Q_ij − λ q_ij)

Only the chains on the upper concave hull of a request's points (q_ij, Q_ij) can be chosen,
and the hull's slopes are the prices λ at which the request switches to its next dearer
chain. Total spend S(λ) is therefore a non-increasing step function of λ whose steps are
those slopes, and λ* = min {λ ≥ 0 : S(λ) ≤ C} is read off the breakpoints sorted by slope.

Walking every request's whole hull costs O(N J H) for hulls of H vertices. Only the
breakpoints near λ* matter, so for large N the solver first brackets λ* in [lo, hi] from
the exact solution of a random subsample (recursively), checks the bracket on all
requests in one pass (S(lo) > C ≥ S(hi)), and walks hulls only for the requests whose
choice differs between lo and hi, and only between those prices. A bracket that misses
(unlikely; the margin is four standard errors) falls back to lo = 0 or hi = ∞, which is
the plain whole-hull method: sampling changes the time, never the answer.

Integral solution: requests with a breakpoint above λ* take their dearer vertex. The LP
optimum mixes one request at λ* between two vertices; the integral allocation serves it
the cheaper one. When several requests share the breakpoint λ* (integer clicks make this
common) they are upgraded whole, smallest cost increase first, while the budget allows,
so the objective is within one request's reward of the LP bound.

Units: Q clicks, q and C FLOPs, λ clicks per FLOP.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from greenflow.platform.allocation.decision import (
    CostSorted,
    as_costs,
    as_rewards,
    chosen_rewards,
)

# At or below this many requests the whole hull of every request is walked: it is cheap
# there, and it is the base case of the subsample recursion.
_WHOLE_HULL_MAX_ROWS = 4_096
# A level with n requests brackets λ* from a subsample of n / 16 requests (at least 2,048).
_SUBSAMPLE_DIVISOR = 16
_SUBSAMPLE_MIN_ROWS = 2_048
_MARGIN_Z = 4.0  # bracket margin in standard errors of the subsample's spend estimate
_SEED = 0  # the subsample is fixed so that a solve is deterministic
_OFF_BREAKPOINT = 1e-9  # relative shift of the bracket ends off sampled breakpoints
_ROW_CHUNK = 1 << 16  # requests per chunk where whole rows are gathered


@dataclass(frozen=True)
class Allocation:
    """Solution of problem (3) for one set of requests and one budget.

    ``objective`` and ``lp_bound`` are in clicks (reward units of Q), ``dual_price`` in
    clicks per FLOP. When the budget is below every request's cheapest chain the problem
    is infeasible: everyone is served the cheapest chain, ``feasible`` is False,
    ``spend_flops`` exceeds ``budget_flops``, ``dual_price`` is the least price at which
    every request prefers its cheapest chain, and ``lp_bound`` is NaN (no LP solution).
    """

    dual_price: float  # λ*, clicks/FLOP
    choice: np.ndarray  # (N,) chain index per request
    spend_flops: float  # Σ_i q_{i,choice_i}
    budget_flops: float  # C
    objective: float  # Σ_i Q_{i,choice_i}, clicks
    lp_bound: float  # optimum of the LP relaxation, clicks (>= objective)
    feasible: bool

    @property
    def n_requests(self) -> int:
        return int(self.choice.shape[0])


@dataclass
class _Bracket:
    """S(λ) on [lo, hi] for all requests: a base at hi plus the hull steps inside.

    ``layers[k]`` holds the k-th step of every request that has one: (active-local row,
    slope λ at which the step is taken, cost increase in FLOPs, sorted position after it).
    A row's slopes do not increase with k, so the steps taken at any λ form a prefix.
    """

    lo: float
    hi: float
    base_pos: np.ndarray  # (N,) sorted positions chosen at hi
    base_spend_flops: float  # S(hi)
    active: np.ndarray  # (A,) requests whose choice changes inside (lo, hi]
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
    slopes_desc: np.ndarray  # every step's slope, descending
    cum_flops: np.ndarray  # cumulative cost increase along slopes_desc

    def price(self, budget_flops: float) -> float:
        """Least λ in [lo, hi] with S(λ) ≤ budget (hi when none is)."""
        if self.base_spend_flops > budget_flops:
            return self.hi
        k = int(np.searchsorted(self.cum_flops, budget_flops - self.base_spend_flops, "right"))
        # The k-th step is the first that overflows, so λ* is its slope: at λ = slope the
        # tie goes to the cheaper chain and every step above it fits.
        return self.lo if k == self.cum_flops.size else float(self.slopes_desc[k])

    def price_below(self, budget_flops: float) -> float:
        """The breakpoint just below ``price(budget)``: a λ with S(λ) > budget (or lo)."""
        if self.base_spend_flops > budget_flops:
            return self.hi
        k = int(np.searchsorted(self.cum_flops, budget_flops - self.base_spend_flops, "right"))
        if k == self.cum_flops.size:
            return self.lo
        below = int(np.searchsorted(-self.slopes_desc, -self.slopes_desc[k], "right"))
        return float(self.slopes_desc[below]) if below < self.slopes_desc.size else self.lo

    def positions(self, dual_price: float, fill_budget_flops: float | None = None) -> np.ndarray:
        """Sorted positions (N,) at λ; with a budget, tied requests at λ upgraded while it fits."""
        pos = self.base_pos.copy()
        depth = np.zeros(self.active.size, dtype=np.intp)  # steps taken per active request
        spend = self.base_spend_flops
        for k, (rows, slope, dq, target) in enumerate(self.layers):
            take = slope > dual_price
            pos[self.active[rows[take]]] = target[take]
            depth[rows[take]] = k + 1
            spend += float(dq[take].sum())
        if fill_budget_flops is None:
            return pos
        # Requests whose next step sits exactly at λ are indifferent (in the Lagrangian)
        # between its two ends; upgrading them whole keeps optimality at λ and closes the
        # gap to the LP bound to less than one request's step.
        cand_rows, cand_dq, cand_target = [], [], []
        for k, (rows, slope, dq, target) in enumerate(self.layers):
            tied = (slope == dual_price) & (depth[rows] == k)
            cand_rows.append(rows[tied])
            cand_dq.append(dq[tied])
            cand_target.append(target[tied])
        if not cand_rows:
            return pos
        rows = np.concatenate(cand_rows)
        dq = np.concatenate(cand_dq)
        target = np.concatenate(cand_target)
        # Smallest increase first, then lowest request index, so the answer does not
        # depend on how the bracket was found.
        order = np.lexsort((self.active[rows], dq))
        fits = order[np.cumsum(dq[order]) <= fill_budget_flops - spend]
        pos[self.active[rows[fits]]] = target[fits]
        return pos


def _walk(
    Qs: np.ndarray,
    qs: np.ndarray,
    start: np.ndarray,
    end: np.ndarray | None,
    lo: float,
    hi: float,
    max_layers: int | None = None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Upper-hull steps with slopes in (lo, hi] of each row, from position ``start`` upward.

    Qs (n, J) clicks and qs (J,) or (n, J) FLOPs, ascending cost per row; positions are
    in that order. From the current vertex the next is the dearer chain of steepest slope;
    among equal slopes the dearest (collinear points are never chosen under
    ties-to-cheaper), and among equal cost and slope (hence equal Q) the first. A row
    stops at ``end`` (its choice at lo, when known) or when no slope exceeds lo.
    Vectorised across rows; one layer per step.
    """
    if qs.ndim == 2:
        return _walk_per_row(Qs, qs, start, end, lo, hi, max_layers)
    n, J = Qs.shape
    # Scan chains dearest first (stable, so equal costs keep ascending index): the first
    # maximum of argmax is then exactly the tie rule above.
    desc = np.argsort(-qs, kind="stable")  # desc-space column -> sorted position
    rank = np.empty(J, dtype=np.intp)
    rank[desc] = np.arange(J)  # sorted position -> desc-space column
    qd = qs[desc]
    gap = qd[None, :] - qd[:, None]  # gap[c, t]: FLOPs from chain c up to chain t
    gap[gap <= 0] = np.inf  # cheaper or equal chains get slope 0, never a step (lo >= 0)
    Qd = Qs[:, desc]
    cur = rank[start]
    stop = np.full(n, -1, dtype=np.intp) if end is None else rank[end]
    prev = np.full(n, hi)  # slope of the previous step; caps the next against rounding
    alive = np.flatnonzero(cur != stop)
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    while alive.size and (max_layers is None or len(layers) < max_layers):
        Qa = Qd[alive]  # (m, J)
        ar = np.arange(alive.size)
        c = cur[alive]
        slope = Qa - Qa[ar, c][:, None]  # (m, J) clicks
        np.divide(slope, gap[c], out=slope)  # clicks/FLOP
        t = np.argmax(slope, axis=1)
        best = slope[ar, t]
        go = best > lo
        # In exact arithmetic a hull's slopes strictly decrease; rounding must not let a
        # later step look steeper, or "steps above λ" would stop being a prefix.
        step = np.minimum(best, prev[alive])[go]
        rows, t = alive[go], t[go]
        layers.append((rows, step, qd[t] - qd[c[go]], desc[t]))
        cur[rows] = t
        prev[rows] = step
        alive = rows[t != stop[rows]]
    return [layer for layer in layers if layer[0].size]


def _walk_per_row(
    Qs: np.ndarray,
    qs: np.ndarray,
    start: np.ndarray,
    end: np.ndarray | None,
    lo: float,
    hi: float,
    max_layers: int | None,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """``_walk`` for per-request costs (n, J): the same rule, without shared tables."""
    n = Qs.shape[0]
    cur = start.astype(np.intp, copy=True)
    stop = np.full(n, -1, dtype=np.intp) if end is None else end
    prev = np.full(n, hi)
    alive = np.flatnonzero(cur != stop)
    layers: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
    while alive.size and (max_layers is None or len(layers) < max_layers):
        Qa, qa = Qs[alive], qs[alive]  # (m, J)
        ar = np.arange(alive.size)
        c = cur[alive]
        qc = qa[ar, c]
        dq = qa - qc[:, None]  # (m, J) FLOPs
        up = dq > 0
        slope = np.full(dq.shape, -np.inf)
        np.divide(Qa - Qa[ar, c][:, None], dq, out=slope, where=up)
        best = slope.max(axis=1)
        go = best > lo
        tie = slope == best[:, None]
        far = np.where(tie, qa, -np.inf).max(axis=1)
        t = np.argmax(tie & (qa == far[:, None]), axis=1)
        step = np.minimum(best, prev[alive])[go]
        rows, t = alive[go], t[go]
        layers.append((rows, step, (far - qc)[go], t))
        cur[rows] = t
        prev[rows] = step
        alive = rows[t != stop[rows]]
    return [layer for layer in layers if layer[0].size]


def _bracket(
    view: CostSorted, low_flops: float, high_flops: float, rng: np.random.Generator
) -> _Bracket:
    """S(λ) exactly on a price interval containing λ*(C) for every C in [low, high]."""
    lo, hi = 0.0, math.inf
    if view.n > _WHOLE_HULL_MAX_ROWS:
        lo, hi = _subsample_bracket(view, low_flops, high_flops, rng)
    pos_lo, pos_hi = view.positions([lo, hi])
    spend_hi = float(view.cost(pos_hi).sum())
    # The subsample only narrows the search; where it missed, fall back to the whole hull.
    if lo > 0 and not float(view.cost(pos_lo).sum()) > high_flops:
        lo = 0.0
        (pos_lo,) = view.positions([lo])
    if hi < math.inf and not spend_hi <= low_flops:
        hi = math.inf
        (pos_hi,) = view.positions([hi])
        spend_hi = float(view.cost(pos_hi).sum())
    active = np.flatnonzero(pos_lo != pos_hi)
    Qa, qa = view.rows(active)
    layers = _walk(Qa, qa, pos_hi[active], pos_lo[active], lo, hi)
    slopes = np.concatenate([s for _, s, _, _ in layers]) if layers else np.empty(0)
    dq = np.concatenate([d for _, _, d, _ in layers]) if layers else np.empty(0)
    order = np.argsort(-slopes, kind="stable")
    return _Bracket(
        lo=lo,
        hi=hi,
        base_pos=pos_hi,
        base_spend_flops=spend_hi,
        active=active,
        layers=layers,
        slopes_desc=slopes[order],
        cum_flops=np.cumsum(dq[order]),
    )


def _subsample_bracket(
    view: CostSorted, low_flops: float, high_flops: float, rng: np.random.Generator
) -> tuple[float, float]:
    """[lo, hi] with S(lo) > high and S(hi) ≤ low with high probability, from a subsample.

    With n_s of N requests drawn with replacement, N/n_s · S_s(λ) estimates S(λ) with a
    standard error of N σ / √n_s (σ: std of one request's spend); the subsample's own
    exact step function is read at budgets shifted by four such errors.
    """
    n_s = max(_SUBSAMPLE_MIN_ROWS, view.n // _SUBSAMPLE_DIVISOR)
    sub = view.subset(rng.integers(0, view.n, n_s))
    frac = n_s / view.n
    # σ is at most half the cost range; that wider margin bounds the subsample's bracket.
    wide = _MARGIN_Z * 0.5 * float(view.qs.max() - view.qs.min()) * math.sqrt(n_s)
    sb = _bracket(sub, low_flops * frac - wide, high_flops * frac + wide, rng)
    mid = sb.positions(sb.price(0.5 * (low_flops + high_flops) * frac))
    margin = _MARGIN_Z * float(sub.cost(mid).std()) * math.sqrt(n_s)
    lo = sb.price_below(high_flops * frac + margin)
    hi = sb.price(low_flops * frac - margin)
    # Both are breakpoints of sampled requests, which are also in the full set; moving a
    # hair off them keeps those requests from sitting on a tie at an end of the bracket.
    return lo * (1 - _OFF_BREAKPOINT), hi * (1 + _OFF_BREAKPOINT)


def _top_price(view: CostSorted) -> float:
    """Least λ at which every request prefers its cheapest chain (clicks/FLOP)."""
    (cheap,) = view.positions([math.inf])
    top = 0.0
    for r0 in range(0, view.n, _ROW_CHUNK):
        idx = np.arange(r0, min(view.n, r0 + _ROW_CHUNK))
        Qs, qs = view.rows(idx)
        for _, slope, _, _ in _walk(Qs, qs, cheap[idx], None, 0.0, math.inf, max_layers=1):
            top = max(top, float(slope.max()))
    return top


def _problem(
    Q: np.ndarray, q: np.ndarray, budget_flops: float
) -> tuple[np.ndarray, CostSorted, float]:
    """Problem (3) checked: Q as rewards, its cost-sorted view and the budget (FLOPs)."""
    Q = as_rewards(Q)
    q = as_costs(q, Q.shape)
    budget = float(budget_flops)
    if math.isnan(budget):
        raise ValueError("budget must be a number of FLOPs, got NaN")
    return Q, CostSorted(Q, q), budget


def solve_exact(Q: np.ndarray, q: np.ndarray, budget_flops: float) -> Allocation:
    """Optimal λ* and integral allocation of problem (3).

    Q: (N, J) estimated clicks; q: (J,) FLOPs per chain (or (N, J) per request); budget C in
    total FLOPs. λ* is the least λ ≥ 0 whose spend S(λ) fits C (0 when argmax Q fits).
    """
    Q, view, budget = _problem(Q, q, budget_flops)
    if view.n == 0:
        return Allocation(0.0, np.empty(0, np.intp), 0.0, budget, 0.0, 0.0, budget >= 0)
    if budget < view.cheapest_spend_flops():
        (pos,) = view.positions([math.inf])
        choice = view.chain(pos)
        return Allocation(
            dual_price=_top_price(view),
            choice=choice,
            spend_flops=float(view.cost(pos).sum()),
            budget_flops=budget,
            objective=float(chosen_rewards(Q, choice).sum()),
            lp_bound=math.nan,
            feasible=False,
        )
    bracket = _bracket(view, budget, budget, np.random.default_rng(_SEED))
    dual_price = bracket.price(budget)
    pos = bracket.positions(dual_price, fill_budget_flops=budget)
    choice = view.chain(pos)
    spend = float(view.cost(pos).sum())
    objective = float(chosen_rewards(Q, choice).sum())
    # Strong duality: LP optimum = dual value λ*C + Σ_i max_j (Q_ij − λ* q_ij), and the
    # chosen chains attain the inner max at λ*.
    lp_bound = objective if dual_price == 0 else objective + dual_price * (budget - spend)
    return Allocation(dual_price, choice, spend, budget, objective, lp_bound, True)


def exact_price(Q: np.ndarray, q: np.ndarray, budget_flops: float) -> float:
    """``solve_exact(Q, q, budget_flops).dual_price`` (clicks/FLOP), the same value, without
    building the allocation: for callers that need only the price (in-window pacing)."""
    _, view, budget = _problem(Q, q, budget_flops)
    if view.n == 0:
        return 0.0
    if budget < view.cheapest_spend_flops():
        return _top_price(view)
    # A budget that does not bind: every request's best chain fits, λ* = 0 (``_bracket``
    # walks the hull from λ = 0 and would answer its lower end; this skips the walk). The
    # margin leaves budgets within rounding of that spend to the walk, whose sums of steps
    # round differently, so the answer is solve_exact's to the digit.
    (best,) = view.positions([0.0])
    if float(view.cost(best).sum()) <= budget * (1.0 - 1e-9):
        return 0.0
    return _bracket(view, budget, budget, np.random.default_rng(_SEED)).price(budget)


def dual_value(Q: np.ndarray, q: np.ndarray, budget_flops: float, dual_price: float) -> float:
    """The dual function λC + Σ_i max_j (Q_ij − λ q_ij) in clicks: an upper bound for any λ ≥ 0."""
    Q = as_rewards(Q)
    q = as_costs(q, Q.shape)
    return float(dual_price * budget_flops + (Q - dual_price * q).max(axis=1).sum())
