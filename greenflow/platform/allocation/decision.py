"""The online decision of GreenFlow: j*(i, λ) = argmax_j (Q_ij − λ q_ij), ties to the cheaper chain.

Units: Q in clicks (estimated reward per request), q in FLOPs per request, λ (the dual price)
in clicks per FLOP. Ties are broken by lower cost, then (equal cost, hence equal Q) by the
lower chain index; this is the tie rule of DESIGN.md §2 and every solver here follows it.

Chains come in any cost order. The tie rule is enforced by scanning chains in ascending
cost order (a stable sort, so equal costs keep index order) and taking the first maximum.
For a shared cost vector (J,) the permutation is applied block by block while the block is
in cache, so a decision over N × J rewards costs about one read of Q.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Block size in elements (512 KiB of float64): small enough that the permuted copy and the
# λ-shifted copy of a block stay in L2 while argmax reads them.
_BLOCK_ELEMS = 1 << 16


def as_rewards(Q: np.ndarray) -> np.ndarray:
    """Q as a finite float64 (N, J) array; raises ValueError otherwise."""
    Q = np.asarray(Q, dtype=np.float64)
    if Q.ndim != 2 or Q.shape[1] < 1:
        raise ValueError(f"rewards Q must be (N, J) with J >= 1, got shape {Q.shape}")
    if not np.isfinite(Q).all():
        raise ValueError("rewards Q must be finite")
    return Q


def as_costs(q: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """q as finite non-negative float64 FLOPs, (J,) shared or (N, J) per request."""
    q = np.asarray(q, dtype=np.float64)
    if q.shape not in ((shape[1],), shape):
        raise ValueError(f"costs q must be ({shape[1]},) or {shape}, got {q.shape} for Q {shape}")
    if not (np.isfinite(q).all() and (q >= 0).all()):
        raise ValueError("costs q must be finite and non-negative FLOPs")
    return q


class CostSorted:
    """Rewards Q (N, J) and costs q with every request's chains in ascending cost order.

    Internal helper shared by the decision, the exact solver and the controller. A
    *position* is a column index in cost-sorted order; ``chain`` maps it back to the
    caller's chain index.
    """

    def __init__(self, Q: np.ndarray, q: np.ndarray) -> None:
        self.Q = Q
        self.q = q
        self.n, self.n_chains = Q.shape
        self._Qs: np.ndarray | None = None
        self.shared = q.ndim == 1
        if self.shared:
            self.order = np.argsort(q, kind="stable")  # (J,)
            self.qs = q[self.order]  # (J,) ascending
            self.identity = bool((self.order == np.arange(self.n_chains)).all())
            # Chains sharing the least cost: the candidates when λ → ∞.
            self.n_cheapest = int(np.searchsorted(self.qs, self.qs[0], side="right"))
        else:
            self.order = np.argsort(q, axis=1, kind="stable")  # (N, J)
            self.qs = np.take_along_axis(q, self.order, axis=1)  # (N, J) ascending per row
            self.identity = False
            self.n_cheapest = 0
            self._Qs = np.take_along_axis(Q, self.order, axis=1)

    # -- rows in sorted order --------------------------------------------------------------
    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(Qs, qs) for the requests ``idx``: (n, J) and (J,) or (n, J), sorted by cost."""
        if not self.shared:
            assert self._Qs is not None
            return self._Qs[idx], self.qs[idx]
        Qr = self.Q[idx]
        return (Qr if self.identity else Qr[:, self.order]), self.qs

    def subset(self, idx: np.ndarray) -> CostSorted:
        """The same problem restricted to requests ``idx`` (repeats allowed)."""
        return CostSorted(self.Q[idx], self.q if self.shared else self.q[idx])

    # -- decisions -------------------------------------------------------------------------
    def positions(self, prices: Sequence[float]) -> list[np.ndarray]:
        """Sorted positions (N,) of j*(i, λ) for each λ in ``prices``, in one pass over Q.

        λ = inf means the cheapest chain (higher Q among equal least costs).
        """
        outs = [np.empty(self.n, dtype=np.intp) for _ in prices]
        if not self.shared:
            assert self._Qs is not None
            for out, lam in zip(outs, prices, strict=True):
                out[:] = self._positions_block(self._Qs, self.qs, lam)
            return outs
        rows = max(1, _BLOCK_ELEMS // self.n_chains)
        buf = np.empty((min(rows, self.n), self.n_chains))
        tmp = np.empty_like(buf)
        shifts = [None if lam == 0 or np.isinf(lam) else lam * self.qs for lam in prices]
        for r0 in range(0, self.n, rows):
            r1 = min(self.n, r0 + rows)
            block = self.Q[r0:r1]
            if not self.identity:
                block = np.take(block, self.order, axis=1, out=buf[: r1 - r0])
            for out, lam, shift in zip(outs, prices, shifts, strict=True):
                if np.isinf(lam):
                    np.argmax(block[:, : self.n_cheapest], axis=1, out=out[r0:r1])
                elif shift is None:  # λ = 0: Q itself, no rounding from a shift
                    np.argmax(block, axis=1, out=out[r0:r1])
                else:
                    v = np.subtract(block, shift, out=tmp[: r1 - r0])
                    np.argmax(v, axis=1, out=out[r0:r1])
        return outs

    @staticmethod
    def _positions_block(Qs: np.ndarray, qs: np.ndarray, lam: float) -> np.ndarray:
        if np.isinf(lam):
            # Per-request least cost; among those the highest Q, then the first.
            cheap = qs == qs[:, :1]
            return np.argmax(np.where(cheap, Qs, -np.inf), axis=1)
        if lam == 0:
            return np.argmax(Qs, axis=1)
        return np.argmax(Qs - lam * qs, axis=1)

    def chain(self, pos: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """Caller's chain indices for sorted positions ``pos`` of requests ``idx`` (all)."""
        if self.shared:
            return self.order[pos]
        rows = np.arange(self.n) if idx is None else idx
        return self.order[rows, pos]

    def cost(self, pos: np.ndarray, idx: np.ndarray | None = None) -> np.ndarray:
        """FLOPs of sorted positions ``pos`` for requests ``idx`` (all), shape (n,)."""
        if self.shared:
            return self.qs[pos]
        rows = np.arange(self.n) if idx is None else idx
        return self.qs[rows, pos]

    def cheapest_spend_flops(self) -> float:
        """Σ_i min_j q_ij: the least total spend any allocation can reach."""
        return float(self.n * self.qs[0]) if self.shared else float(self.qs[:, 0].sum())


def choose(Q: np.ndarray, q: np.ndarray, dual_price: float) -> np.ndarray:
    """Chain index per request, argmax_j Q_ij − λ q_ij with ties to the cheaper chain.

    Q: (N, J) clicks; q: (J,) or (N, J) FLOPs; dual_price λ >= 0 in clicks/FLOP
    (``inf`` = every request on its cheapest chain). Returns (N,) int chain indices.
    """
    Q = as_rewards(Q)
    view = CostSorted(Q, as_costs(q, Q.shape))
    if not dual_price >= 0:  # also rejects NaN
        raise ValueError(f"dual price must be >= 0 clicks/FLOP, got {dual_price}")
    (pos,) = view.positions([float(dual_price)])
    return view.chain(pos)


def chain_flops(q: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """FLOPs per request (N,) of the chosen chains, for q (J,) or (N, J)."""
    q = np.asarray(q, dtype=np.float64)
    choice = np.asarray(choice)
    if q.ndim == 1:
        return q[choice]
    return q[np.arange(choice.shape[0]), choice]


def chosen_rewards(Q: np.ndarray, choice: np.ndarray) -> np.ndarray:
    """Reward per request (N,) of the chosen chains (clicks)."""
    Q = np.asarray(Q)
    choice = np.asarray(choice, dtype=np.intp)
    if Q.flags.c_contiguous:  # a flat take is ~3x faster than 2-D fancy indexing
        return Q.reshape(-1).take(np.arange(Q.shape[0]) * Q.shape[1] + choice)
    return Q[np.arange(Q.shape[0]), choice]
