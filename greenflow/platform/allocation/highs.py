"""The LP relaxation of problem (3) solved by HiGHS: the reference the exact solver is checked
against (tests) and timed against (``bench/solver.py``).

``highspy`` is a dev dependency, imported only when these functions run.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def build_lp(Q: np.ndarray, q: np.ndarray, budget_flops: float) -> Any:
    """``highspy.HighsLp`` of max Σ x_ij Q_ij s.t. Σ_j x_ij = 1, Σ x_ij q_ij <= C, 0 <= x <= 1."""
    import highspy

    n, J = Q.shape
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = n * J, n + 1
    lp.col_cost_ = -Q.ravel()
    lp.col_lower_, lp.col_upper_ = np.zeros(n * J), np.ones(n * J)
    lp.row_lower_ = np.concatenate([np.ones(n), [-highspy.kHighsInf]])
    lp.row_upper_ = np.concatenate([np.ones(n), [budget_flops]])
    # Column x_ij: 1 in request i's row Σ_j x_ij = 1, q_ij in the budget row.
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_ = np.arange(0, 2 * n * J + 1, 2, dtype=np.int32)
    index = np.empty(2 * n * J, dtype=np.int32)
    index[0::2] = np.repeat(np.arange(n, dtype=np.int32), J)
    index[1::2] = n
    value = np.ones(2 * n * J)
    value[1::2] = np.broadcast_to(q, Q.shape).ravel()
    lp.a_matrix_.index_, lp.a_matrix_.value_ = index, value
    return lp


def solve_lp(lp: Any, threads: int | None = None) -> float | None:
    """Optimum in clicks; None when infeasible; RuntimeError on any other non-optimal end."""
    import highspy

    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    if threads is not None:
        h.setOptionValue("threads", threads)
    h.passModel(lp)
    h.run()
    status = h.getModelStatus()
    if status == highspy.HighsModelStatus.kInfeasible:
        return None
    if status != highspy.HighsModelStatus.kOptimal:
        raise RuntimeError(f"HiGHS: {h.modelStatusToString(status)}")
    return -h.getInfo().objective_function_value
