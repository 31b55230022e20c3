"""Per-request computation allocation (DESIGN.md §2).

``choose`` is the online decision j*(i, λ); ``solve_exact`` the exact solve of problem (3)
through its dual; Algorithm 1 (dynamic primal-dual) is ``online.OnlineAllocator`` (a
replica: cached λ, ``SpendGuard``) and ``nearline.NearlineDriver`` (windows, the
``DualPriceController``), replayed offline by ``replay.replay_serving``. numpy only, no Ray.
"""

from greenflow.platform.allocation.decision import chain_flops, choose, chosen_rewards
from greenflow.platform.allocation.exact import Allocation, dual_value, solve_exact
from greenflow.platform.allocation.primal_dual import (
    Clock,
    DualPriceController,
    SpendGuard,
    WindowRecord,
)

__all__ = [
    "Allocation",
    "Clock",
    "DualPriceController",
    "SpendGuard",
    "WindowRecord",
    "chain_flops",
    "choose",
    "chosen_rewards",
    "dual_value",
    "solve_exact",
]
