"""Exact-solver benchmark (issue: allocation core, part 6).

(a) the exact solver (``solve_exact``) vs HiGHS on the same LP relaxation of problem (3):
    time of each, their ratio and the relative difference of the objectives;
(b) the exact solver alone on 1,000,000 requests × 32 chains: time and peak memory.

Both run on one core: the thread variables are set before numpy is imported, and HiGHS is
given one thread. Instances: chain costs log-uniform in [1e6, 1e9] FLOPs in arbitrary
order, clicks growing concavely with cost at request-specific rates, budget 30% of what
serving everyone the dearest chain would cost.

    .venv/bin/python bench/solver.py            # HiGHS at 500, 1,000, 2,000 × 32; 1M × 32
    .venv/bin/python bench/solver.py --quick    # HiGHS at 200, 500 × 32; 200k × 32
    .venv/bin/python bench/solver.py --full     # also HiGHS at 5k, 10k, 20k × 32 (minutes)
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"  # one core, set before numpy loads its BLAS

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from greenflow.platform.allocation import solve_exact  # noqa: E402
from greenflow.platform.allocation.highs import build_lp, solve_lp  # noqa: E402

BUDGET_SHARE = 0.3  # of the spend when every request gets its dearest chain


def make_instance(n: int, n_chains: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Q (n, J) clicks, q (J,) FLOPs in arbitrary chain order, budget C in FLOPs."""
    rng = np.random.default_rng(seed)
    q = np.exp(rng.uniform(np.log(1e6), np.log(1e9), n_chains))
    gain = np.log1p(q / 1e6) / np.log1p(1e3)  # (J,) in (0, 1], concave in cost
    activity = rng.gamma(0.7, 1.0, (n, 1))  # heterogeneous users: who gains from compute
    Q = activity * gain + rng.normal(0.0, 0.05, (n, n_chains))  # per-chain model noise
    np.maximum(Q, 0.0, out=Q)
    return Q, q, BUDGET_SHARE * n * float(q.max())


def highs_lp(Q: np.ndarray, q: np.ndarray, budget_flops: float) -> tuple[float, float]:
    """(objective in clicks, seconds) of the LP relaxation solved by HiGHS on one thread."""
    lp = build_lp(Q, q, budget_flops)
    start = time.perf_counter()
    objective = solve_lp(lp, threads=1)
    seconds = time.perf_counter() - start
    if objective is None:
        raise RuntimeError("HiGHS: infeasible")
    return objective, seconds


def time_exact(
    Q: np.ndarray, q: np.ndarray, budget: float, repeat: int
) -> tuple[float, list[float]]:
    """(LP bound in clicks, wall seconds of each solve)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        sol = solve_exact(Q, q, budget)
        times.append(time.perf_counter() - start)
    return sol.lp_bound, times


def compare(sizes: list[int], n_chains: int, repeat: int, seed: int) -> list[dict[str, float]]:
    rows = []
    print(f"{'size':>12} {'HiGHS s':>9} {'exact ms':>9} {'ratio':>9} {'obj rel diff':>13}")
    for n in sizes:
        Q, q, budget = make_instance(n, n_chains, seed)
        highs_obj, highs_s = highs_lp(Q, q, budget)
        exact_obj, times = time_exact(Q, q, budget, repeat)
        exact_s = min(times)
        rel = abs(exact_obj - highs_obj) / abs(highs_obj)
        row = {
            "requests": n,
            "chains": n_chains,
            "highs_s": highs_s,
            "exact_s": exact_s,
            "ratio": highs_s / exact_s,
            "objective_rel_diff": rel,
        }
        rows.append(row)
        print(
            f"{f'{n:,} x {n_chains}':>12} {highs_s:9.2f} {1e3 * exact_s:9.2f} "
            f"{highs_s / exact_s:9.0f} {rel:13.1e}",
            flush=True,
        )
    return rows


def bisection_s(Q: np.ndarray, q: np.ndarray, budget: float, steps: int = 60) -> float:
    """Seconds of a plain bisection on λ (the naive alternative), for scale."""
    start = time.perf_counter()
    lo, hi = 0.0, float(np.max(Q) / np.min(q[q > 0]))
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        spend = q[np.argmax(Q - mid * q, axis=1)].sum()
        lo, hi = (mid, hi) if spend > budget else (lo, mid)
    return time.perf_counter() - start


def large(n: int, n_chains: int, repeat: int, seed: int, bisect: bool) -> dict[str, float]:
    Q, q, budget = make_instance(n, n_chains, seed)
    results: dict[str, float] = {"requests": n, "chains": n_chains}
    for label, (QQ, qq) in {
        "arbitrary_order": (Q, q),
        "cost_sorted": (np.ascontiguousarray(Q[:, np.argsort(q)]), np.sort(q)),
    }.items():
        solve_exact(QQ, qq, budget)  # warm-up: page in Q and the code
        _, times = time_exact(QQ, qq, budget, repeat)
        results[f"{label}_s_min"] = min(times)
        results[f"{label}_s_median"] = statistics.median(times)
        print(
            f"exact {n:,} x {n_chains} (chains {label.replace('_', ' ')}): "
            f"min {min(times):.3f} s, median {statistics.median(times):.3f} s over {repeat}"
        )
    tracemalloc.start()  # counts numpy's buffers; slows the solve, so timed apart
    tracemalloc.reset_peak()
    sol = solve_exact(Q, q, budget)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    results["peak_extra_mib"] = peak / 2**20
    results["input_mib"] = Q.nbytes / 2**20
    results["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    results["dual_price"] = sol.dual_price
    results["budget_use"] = sol.spend_flops / sol.budget_flops
    print(
        f"  peak memory allocated by the solve {results['peak_extra_mib']:.0f} MiB "
        f"(input Q {results['input_mib']:.0f} MiB; process max RSS "
        f"{results['max_rss_mib']:.0f} MiB); λ* = {sol.dual_price:.4g} clicks/FLOP, "
        f"budget used {results['budget_use']:.6f}"
    )
    if bisect:
        results["bisection_60_s"] = bisection_s(Q, q, budget)
        print(f"  plain 60-step bisection on λ, for scale: {results['bisection_60_s']:.2f} s")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, a few seconds")
    parser.add_argument("--full", action="store_true", help="HiGHS up to 20,000 x 32 (minutes)")
    parser.add_argument("--sizes", type=int, nargs="*", help="requests per HiGHS comparison")
    parser.add_argument("--chains", type=int, default=32)
    parser.add_argument("--large", type=int, help="requests of the exact-only run")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bisect", action="store_true", help="also time a 60-step bisection")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    if args.sizes:
        sizes = args.sizes
    elif args.quick:
        sizes = [200, 500]
    elif args.full:
        sizes = [500, 1_000, 2_000, 5_000, 10_000, 20_000]
    else:
        sizes = [500, 1_000, 2_000]
    n_large = args.large or (200_000 if args.quick else 1_000_000)

    print(f"exact solver vs HiGHS (one thread), LP relaxation, {args.chains} chains")
    table = compare(sizes, args.chains, args.repeat, args.seed)
    print()
    big = large(n_large, args.chains, args.repeat, args.seed, args.bisect)
    if args.json:
        args.json.write_text(json.dumps({"highs_vs_exact": table, "large": big}, indent=2))


if __name__ == "__main__":
    main()
