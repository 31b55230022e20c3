"""Per-request computation allocation (DESIGN.md §2).

``choose`` is the online decision j*(i, λ); ``solve_exact`` the exact solve of problem (3)
through its dual; ``DualPriceController``, ``SpendGuard``, ``WindowedAllocator`` and
``replay`` are Algorithm 1 (dynamic primal-dual). numpy only, no Ray.
"""

from greenflow.platform.allocation.decision import chain_flops, choose, chosen_rewards
from greenflow.platform.allocation.exact import Allocation, dual_value, solve_exact
from greenflow.platform.allocation.primal_dual import (
    BudgetSchedule,
    Clock,
    DualPriceController,
    SpendGuard,
    WindowedAllocator,
    WindowRecord,
    replay,
)

__all__ = [
    "Allocation",
    "BudgetSchedule",
    "Clock",
    "DualPriceController",
    "SpendGuard",
    "WindowRecord",
    "WindowedAllocator",
    "chain_flops",
    "choose",
    "chosen_rewards",
    "dual_value",
    "replay",
    "solve_exact",
]
