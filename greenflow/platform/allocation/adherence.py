"""Budget adherence over windows: the over-budget share and MaRCA's μ and ν (DESIGN.md §2).

Over the windows t *with traffic* (a window that served no request says nothing about a
controller), with spend Ĉ_t and budget C_t (FLOPs):

  over_budget_windows_pct  100 · share of windows with Ĉ_t > C_t · OVER_BUDGET_SLACK
  utilisation_pct          μ = 100 · mean_t min(Ĉ_t, C_t) / C_t   (budget used, capped at 1)
  over_utilisation_pct     ν = 100 · mean_t max(Ĉ_t − C_t, 0) / C_t (overspend, relative)

μ and ν are the figures MaRCA (JD, 2025) reports for its MPC budget controller
(μ = 95.29%, ν = 0.64%), so a run here compares with it directly. A controller that never
spends scores μ = 0; one that always spends 2C scores μ = 100%, ν = 100%.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from greenflow.platform.traffic import OVER_BUDGET_SLACK


@dataclass(frozen=True)
class BudgetAdherence:
    """Adherence of a run's windows (module docstring); NaN figures when no window counts."""

    windows: int  # windows with traffic and a positive budget
    over_budget_windows_pct: float
    utilisation_pct: float
    over_utilisation_pct: float

    def to_json(self) -> dict[str, float | int | None]:
        return {k: (None if isinstance(v, float) and np.isnan(v) else v)
                for k, v in asdict(self).items()}  # fmt: skip


def budget_adherence(
    spend: Sequence[float], budget: Sequence[float], requests: Sequence[int] | None = None
) -> BudgetAdherence:
    """Adherence of windows with ``spend`` and ``budget`` (FLOPs each); with ``requests``,
    windows that served none are left out."""
    s = np.asarray(spend, dtype=np.float64)
    c = np.asarray(budget, dtype=np.float64)
    if s.shape != c.shape:
        raise ValueError(f"spend {s.shape} and budget {c.shape} differ in shape")
    keep = c > 0
    if requests is not None:
        keep &= np.asarray(requests) > 0
    s, c = s[keep], c[keep]
    if not len(s):
        return BudgetAdherence(0, float("nan"), float("nan"), float("nan"))
    return BudgetAdherence(
        windows=len(s),
        over_budget_windows_pct=100.0 * float(np.mean(s > c * OVER_BUDGET_SLACK)),
        utilisation_pct=100.0 * float(np.mean(np.minimum(s, c) / c)),
        over_utilisation_pct=100.0 * float(np.mean(np.maximum(s - c, 0.0) / c)),
    )
