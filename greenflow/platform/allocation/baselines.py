"""Allocation policies compared in the offline evaluation, behind one interface.

Every policy answers ``allocate(budget_flops) -> (N,) chain index per request`` for the
same N evaluation requests; the evaluation then charges the true clicks R and costs q of
the chosen chains. What each policy may look at:

* ``GreenFlowPolicy`` — the reward model's estimates Q̂ (N, J) and the exact dual solve
  over every chain (DESIGN.md §2; Lu et al., IJCAI 2023).
* ``OraclePolicy`` — the same solve on the true rewards R: the ceiling no allocator passes.
* ``EqualPolicy`` — everyone gets the same chain: the best fixed chain (highest mean reward
  on the training samples) whose total cost fits the budget; optionally restricted to one
  rank model (EQUAL-DIN, EQUAL-DIEN). The usual production setting.
* ``DCAFPolicy`` — Jiang et al., "DCAF: A Dynamic Computation Allocation Framework for
  Online Serving System", DLP-KDD 2020: one stage is allocated per request (by default the
  item scale k_{S-1} the last stage scores: k_2 of recall → pre-rank → rank) with a dual
  price; the other actions stay fixed, at the prefix (the other scales, every model) whose
  estimated clicks are highest at that budget.
* ``CRASPolicy`` — Yang et al., "Computation Resource Allocation Solution in Recommender
  Systems", 2021: stages are treated as independent. Each stage's item scale (by default
  every stage's but the last, whose scale is the exposed K) is allocated
  on its own with its own single-stage reward curve, budget share and dual price, and the
  stage rewards are assumed to multiply. One rank model (CRAS-DIN, CRAS-DIEN). The
  single-stage curve of stage s for request i is Q̂_i along stage s with the other stages
  at their largest scale. A stage's item scale k_s is the number of items it passes on, so
  what k_s costs is paid by the next stage, which scores them; the budget is split between
  the allocated scales in proportion to those costs in the most expensive chain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from greenflow.platform.allocation.exact import solve_exact
from greenflow.platform.chains import Chain


@dataclass(frozen=True)
class PolicyResult:
    """A policy's choice for one budget, plus the dual price it used (NaN if none)."""

    choice: np.ndarray  # (N,) chain indices
    dual_price: float = float("nan")  # clicks per FLOP
    feasible: bool = True


class GreenFlowPolicy:
    """Exact dual solve on estimated rewards Q̂ over all (or a subset of) chains."""

    def __init__(self, Q: np.ndarray, q: np.ndarray, allowed: np.ndarray | None = None) -> None:
        self.Q, self.q = Q, q
        self.allowed = np.arange(len(q)) if allowed is None else np.flatnonzero(allowed)

    def allocate(self, budget_flops: float) -> PolicyResult:
        sol = solve_exact(self.Q[:, self.allowed], self.q[self.allowed], budget_flops)
        return PolicyResult(self.allowed[sol.choice], sol.dual_price, sol.feasible)


class OraclePolicy(GreenFlowPolicy):
    """GreenFlow's solve on the true rewards R (N, J)."""

    def __init__(self, R: np.ndarray, q: np.ndarray) -> None:
        super().__init__(R.astype(np.float64), q)


class EqualPolicy:
    """The same chain for everyone: best mean training reward among chains that fit."""

    def __init__(
        self,
        train_mean_reward: np.ndarray,
        q: np.ndarray,
        n_requests: int,
        allowed: np.ndarray | None = None,
    ) -> None:
        self.mean, self.q, self.n = train_mean_reward, q, n_requests
        self.allowed = np.ones(len(q), bool) if allowed is None else allowed

    def allocate(self, budget_flops: float) -> PolicyResult:
        fits = self.allowed & (self.q * self.n <= budget_flops * (1 + 1e-12))
        if not fits.any():  # infeasible: the cheapest allowed chain, reported as such
            j = int(np.flatnonzero(self.allowed)[np.argmin(self.q[self.allowed])])
            return PolicyResult(np.full(self.n, j), feasible=False)
        candidates = np.flatnonzero(fits)
        # highest mean reward; ties to the cheaper chain
        best = candidates[np.lexsort((self.q[candidates], -self.mean[candidates]))[0]]
        return PolicyResult(np.full(self.n, int(best)))


def feeding_stage(chains: Sequence[Chain]) -> int:
    """Index of the stage whose item scale the last stage scores (S - 2; 0 for one stage):
    DCAF's allocated stage, the scale that decides the dearest stage's work."""
    return max(len(chains[0].actions) - 2, 0)


def _prefix_groups(chains: Sequence[Chain], free_stage: int) -> dict[tuple, np.ndarray]:
    """Chain indices grouped by every action except ``free_stage``'s item scale."""
    groups: dict[tuple, list[int]] = {}
    for j, chain in enumerate(chains):
        key = tuple(
            (a.model, None if s == free_stage else a.k) for s, a in enumerate(chain.actions)
        )
        groups.setdefault(key, []).append(j)
    return {k: np.array(v) for k, v in groups.items()}


class DCAFPolicy:
    """Allocate one stage's item scale per request; the rest fixed at the best prefix."""

    def __init__(
        self, Q: np.ndarray, q: np.ndarray, chains: Sequence[Chain], free_stage: int | None = None
    ) -> None:
        self.Q, self.q = Q, q
        self.free_stage = feeding_stage(chains) if free_stage is None else free_stage
        self.groups = list(_prefix_groups(chains, self.free_stage).values())

    def allocate(self, budget_flops: float) -> PolicyResult:
        best: tuple[float, PolicyResult] | None = None
        for group in self.groups:
            sol = solve_exact(self.Q[:, group], self.q[group], budget_flops)
            if not sol.feasible:
                continue
            if best is None or sol.objective > best[0]:
                best = (sol.objective, PolicyResult(group[sol.choice], sol.dual_price))
        if best is None:  # no prefix fits: everyone on the globally cheapest chain
            return PolicyResult(np.full(self.Q.shape[0], int(np.argmin(self.q))), feasible=False)
        return best[1]


class CRASPolicy:
    """Independent per-stage allocation of item scales with multiplied stage rewards."""

    def __init__(
        self,
        Q: np.ndarray,
        stage_cost: np.ndarray,
        chains: Sequence[Chain],
        rank_model: str,
        stages: Sequence[int] | None = None,  # default: every stage but the last
    ) -> None:
        self.Q = Q
        self.stages = tuple(range(len(chains[0].actions) - 1) if stages is None else stages)
        if not self.stages:
            raise ValueError("CRAS allocates the scales of stages before the last: none here")
        self.q = stage_cost.sum(1)
        keep = [j for j, c in enumerate(chains) if c.actions[-1].model == rank_model]
        if not keep:
            raise ValueError(f"no chain ends in rank model {rank_model!r}")
        self.chains = {j: chains[j] for j in keep}
        self.index = {tuple(a.k for a in chains[j].actions): j for j in keep}
        self.scales = [sorted({chains[j].actions[s].k for j in keep}) for s in self.stages]
        top = {s: max(chains[j].actions[s].k for j in keep) for s in self.stages}
        self.full = self.index[
            tuple(top.get(s, a.k) for s, a in enumerate(chains[keep[0]].actions))
        ]
        self.full_stage_cost = stage_cost[self.full]
        self.stage_cost = stage_cost
        # per stage: the chain reached by moving only that stage's scale from the full chain
        self.along: list[np.ndarray] = []
        for s, scales in zip(self.stages, self.scales, strict=True):
            base = [a.k for a in chains[self.full].actions]
            row = []
            for k in scales:
                ks = list(base)
                ks[s] = k
                row.append(self.index.get(tuple(ks), -1))
            self.along.append(np.array(row))

    def allocate(self, budget_flops: float) -> PolicyResult:
        n = self.Q.shape[0]
        paid_by = [s + 1 for s in self.stages]  # k_s is scored (paid for) by stage s + 1
        fixed = self.full_stage_cost.sum() - self.full_stage_cost[paid_by].sum()
        variable = self.full_stage_cost[paid_by]
        free = max(budget_flops - fixed * n, 0.0)
        picked: list[np.ndarray] = []
        prices: list[float] = []
        feasible = True
        for i, (s, along) in enumerate(zip(self.stages, self.along, strict=True)):
            ok = along >= 0
            curve = self.Q[:, along[ok]]  # (N, K_s) single-stage reward curve
            cost = self.stage_cost[along[ok], s + 1]
            share = free * variable[i] / variable.sum()
            sol = solve_exact(curve, cost, share)
            feasible &= sol.feasible
            picked.append(np.array(self.scales[i])[ok][sol.choice])
            prices.append(sol.dual_price)
        choice = np.empty(n, dtype=np.int64)
        base = [a.k for a in self.chains[self.full].actions]
        for r in range(n):
            ks = list(base)
            for s, scale in zip(self.stages, picked, strict=True):
                ks[s] = int(scale[r])
            # stages were chosen independently: repair k_1 >= k_2 by lowering later scales
            for s in range(1, len(ks)):
                ks[s] = min(ks[s], ks[s - 1])
            choice[r] = self._nearest(tuple(ks))
        return PolicyResult(choice, float(np.mean(prices)), feasible)

    def _nearest(self, ks: tuple[int, ...]) -> int:
        if ks in self.index:
            return self.index[ks]
        # a repaired combination may not be a chain: take the dearest chain not above it
        below = [(self.q[j], j) for key, j in self.index.items()
                 if all(a <= b for a, b in zip(key, ks, strict=True))]  # fmt: skip
        return max(below)[1] if below else min((self.q[j], j) for j in self.index.values())[1]
