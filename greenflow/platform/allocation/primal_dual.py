"""Algorithm 1's pieces, dynamic primal-dual allocation (DESIGN.md §2): the λ update, the
guard, the window record. The replica (``online``) and the driver (``nearline``) run them;
``replay`` drives those two over a recorded stream.

Time is cut into windows of ``window_s`` seconds. Online, every request of window t is
served j*(i, λ_t) (``choose``). Nearline, when window t closes, its samples (Q_i·, q) and
the next window's budget C_{t+1} give λ_{t+1} by projected dual (sub)gradient steps

    λ ← max(0, λ − η (C_{t+1} − Σ_i q_{j*(i,λ)}) / C_{t+1})

or by the exact solve on those samples, then optional exponential smoothing. A per-window
``SpendGuard`` serves the cheapest chain once the window's spend passes C_t (1 + ε), so a
traffic spike costs at most the cheapest chain per extra request; its overspend is
reported in every window record.

Units: Q clicks, q and budgets FLOPs, λ and η clicks per FLOP, times seconds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np

from greenflow.platform.allocation.decision import (
    CostSorted,
    as_costs,
    as_rewards,
    chain_flops,
    choose,
)
from greenflow.platform.allocation.exact import solve_exact

Clock = Callable[[], float]  # seconds; injected so tests can fake time


class DualPriceController:
    """Nearline update of the dual price λ (clicks/FLOP), scikit-learn style.

    Parameters are only stored here; ``fit`` (optional warm start: λ* of training
    samples) and ``update`` (one window) set the learned ``dual_price_``.

    step_size: η in clicks/FLOP for ``method="gradient"``; None uses the λ from ``fit``
        (a relative step of 1). ``n_steps`` gradient steps are taken per window.
    method: "gradient" (projected dual-gradient steps) or "exact" (re-solve the window).
    smoothing: weight of the previous λ, in [0, 1): λ ← s λ_old + (1 − s) λ_new.
    initial_price: λ used before any ``fit`` or ``update``.
    """

    def __init__(
        self,
        step_size: float | None = None,
        method: Literal["gradient", "exact"] = "gradient",
        smoothing: float = 0.0,
        n_steps: int = 1,
        initial_price: float = 0.0,
    ) -> None:
        self.step_size = step_size
        self.method = method
        self.smoothing = smoothing
        self.n_steps = n_steps
        self.initial_price = initial_price

    def price(self) -> float:
        """The current λ: the learned ``dual_price_`` or, before any update, the initial one."""
        return float(getattr(self, "dual_price_", self.initial_price))

    def fit(self, Q: np.ndarray, q: np.ndarray, budget_flops: float) -> DualPriceController:
        """Warm start: λ* of training samples (Q (N, J) clicks, q FLOPs) at budget C."""
        self._check_params()
        self.dual_price_ = solve_exact(Q, q, budget_flops).dual_price
        self.fit_price_ = self.dual_price_
        self.n_updates_ = 0
        return self

    def update(self, Q_window: np.ndarray, q: np.ndarray, next_budget_flops: float) -> float:
        """λ for the next window from this window's samples and the next budget (FLOPs).

        An empty window carries no information about spend, so λ is kept.
        """
        self._check_params()
        lam = self.price()
        Q = as_rewards(Q_window)
        q = as_costs(q, Q.shape)
        budget = float(next_budget_flops)
        if not budget > 0:
            raise ValueError(f"next window budget must be > 0 FLOPs, got {budget}")
        if Q.shape[0]:
            if self.method == "exact":
                target = solve_exact(Q, q, budget).dual_price
            else:
                eta = self._eta()
                view = CostSorted(Q, q)
                target = lam
                for _ in range(self.n_steps):
                    (pos,) = view.positions([target])
                    spend = float(view.cost(pos).sum())
                    # Normalised by the budget, so η keeps its meaning as C changes.
                    target = max(0.0, target - eta * (budget - spend) / budget)
            lam = self.smoothing * lam + (1.0 - self.smoothing) * target
        self.dual_price_ = lam
        self.n_updates_ = getattr(self, "n_updates_", 0) + 1
        return lam

    def _eta(self) -> float:
        if self.step_size is not None:
            return float(self.step_size)
        if not hasattr(self, "fit_price_") or self.fit_price_ <= 0:
            raise ValueError("step_size=None takes η from fit(); call fit() with a binding budget")
        return float(self.fit_price_)

    def _check_params(self) -> None:
        if self.method not in ("gradient", "exact"):
            raise ValueError(f"method must be 'gradient' or 'exact', got {self.method!r}")
        if not 0.0 <= self.smoothing < 1.0:
            raise ValueError(f"smoothing must be in [0, 1), got {self.smoothing}")
        if self.n_steps < 1:
            raise ValueError(f"n_steps must be >= 1, got {self.n_steps}")
        if self.step_size is not None and not self.step_size >= 0:
            raise ValueError(f"step_size must be >= 0 clicks/FLOP, got {self.step_size}")
        if not self.initial_price >= 0:
            raise ValueError(f"initial_price must be >= 0 clicks/FLOP, got {self.initial_price}")


class SpendGuard:
    """One window's safety net against traffic spikes, in one of two modes.

    Reactive (the paper's): requests are admitted in arrival order; the request that
    crosses C (1 + ε) is still served its chosen chain, every later one its cheapest
    (higher Q among equal least costs). So spend ≤ C (1 + ε) + max_j q_j +
    guard_requests · min_j q_j.

    Predictive (``predictive=True``, what serving uses): a request whose chosen chain
    would take the spend past C (1 + ε) gets the best chain (max Q − λ q) that still fits
    the remaining budget, or the cheapest chain when none fits. The guard so acts *before*
    the budget is reached: spend ≤ C (1 + ε) + guard_requests · min_j q_j, and the second
    term only once even the cheapest chain no longer fits.
    """

    def __init__(
        self, budget_flops: float, tolerance: float = 0.05, predictive: bool = False
    ) -> None:
        if not tolerance >= 0:
            raise ValueError(f"guard tolerance must be >= 0, got {tolerance}")
        self.budget_flops = float(budget_flops)
        self.tolerance = float(tolerance)
        self.predictive = predictive
        self.spend_flops = 0.0
        self.requests = 0
        self.guard_requests = 0  # requests whose chain the guard changed

    @property
    def limit_flops(self) -> float:
        return self.budget_flops * (1.0 + self.tolerance)

    @property
    def overspend_flops(self) -> float:
        """Spend above the budget C (not above the limit), never hidden."""
        return max(0.0, self.spend_flops - self.budget_flops)

    def serve(self, Q: np.ndarray, q: np.ndarray, dual_price: float) -> np.ndarray:
        """Chains (N,) for requests Q (N, J) in arrival order at price λ, guard applied."""
        Q = as_rewards(Q)
        q = as_costs(q, Q.shape)
        return self.admit(Q, q, choose(Q, q, dual_price), dual_price)

    def admit(
        self,
        Q: np.ndarray,
        q: np.ndarray,
        choice: np.ndarray,
        dual_price: float = math.inf,
        reserve_flops: float = 0.0,
    ) -> np.ndarray:
        """Apply the guard to chains already chosen for requests in arrival order.

        Predictive mode only: ``dual_price`` (clicks/FLOP) ranks the chains that still fit,
        and ``reserve_flops`` is kept free for the requests still expected in the window
        (e.g. their number × the cheapest chain), so that the window's last requests are
        not the ones that overflow it.
        """
        choice = np.asarray(choice)
        cost = chain_flops(q, choice)
        limit = self.limit_flops - (reserve_flops if self.predictive else 0.0)
        # Spend before each request if none were guarded; guarding starts at the first
        # request that finds the limit already passed (reactive) or would pass it with
        # its own chain (predictive); the rest are then handled one by one.
        before = self.spend_flops + np.concatenate(([0.0], np.cumsum(cost)[:-1]))
        if self.predictive:
            over = np.flatnonzero(before + cost > limit)
            first = int(over[0]) if over.size else choice.shape[0]
        else:
            first = int(np.searchsorted(before, self.limit_flops, side="right"))
        if first < choice.shape[0]:
            choice, cost = choice.copy(), cost.copy()
            rest = slice(first, None)
            if self.predictive:
                spend = float(before[first])
                for i in range(first, choice.shape[0]):
                    q_i = q if q.ndim == 1 else q[i]
                    if spend + q_i[choice[i]] > limit:
                        choice[i] = _best_fitting(Q[i], q_i, limit - spend, dual_price)
                        cost[i] = q_i[choice[i]]
                        self.guard_requests += 1
                    spend += float(cost[i])
            else:
                cheap = choose(Q[rest], q if q.ndim == 1 else q[rest], math.inf)
                choice[rest] = cheap
                cost[rest] = chain_flops(q if q.ndim == 1 else q[rest], cheap)
                self.guard_requests += choice.shape[0] - first
        self.spend_flops += float(cost.sum())
        self.requests += int(choice.shape[0])
        return choice


def _best_fitting(Q_i: np.ndarray, q_i: np.ndarray, room_flops: float, dual_price: float) -> int:
    """j*(λ) among the chains with q ≤ room (the decision's tie rule); else the cheapest."""
    fits = np.flatnonzero(q_i <= room_flops)
    if not fits.size:
        return int(choose(Q_i[None, :], q_i, math.inf)[0])
    price = dual_price if math.isfinite(dual_price) else 0.0
    return int(fits[choose(Q_i[None, fits], q_i[fits], price)[0]])


@dataclass(frozen=True)
class WindowRecord:
    """What happened in one window; ``as_dict`` gives the loadtest.json keys."""

    t_s: float  # window start
    spend_flops: float
    budget_flops: float
    dual_price: float  # λ used online in this window, clicks/FLOP
    requests: int
    guard_requests: int
    overspend_flops: float
    reward: float  # Σ Q of the served chains, estimated clicks
    clicks: float | None = None  # Σ true reward of the served chains, when known

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "t": self.t_s,
            "spend": self.spend_flops,
            "budget": self.budget_flops,
            "dual_price": self.dual_price,
            "requests": self.requests,
            "guard_requests": self.guard_requests,
            "overspend": self.overspend_flops,
            "reward": self.reward,
            "clicks": self.clicks,
        }
