"""Pieces shared by the Tune runners: the searcher factory and a one-line-per-trial log."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ray import tune

from greenflow.errors import ConfigError


class TrialProgress(tune.Callback):
    """One line per finished trial (Tune's own tables are silenced: verbose=0)."""

    def __init__(
        self, total: int, log: Callable[[str], None], describe: Callable[[Any], str]
    ) -> None:
        self.total, self.done, self.log, self.describe = total, 0, log, describe

    def on_trial_complete(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        self.done += 1
        self.log(f"  trial {self.done}/{self.total} {trial.trial_id}: {self.describe(trial)}")


def make_searcher(searcher: str, seed: int, num_samples: int) -> Any:
    """Optuna's TPE (seeded; a few random start-up trials) or Tune's random search."""
    if searcher == "random":
        from ray.tune.search.basic_variant import BasicVariantGenerator

        return BasicVariantGenerator(random_state=seed)
    try:
        import optuna
    except ImportError as exc:
        raise ConfigError(
            "the optuna searcher needs the optuna package (pip install optuna); "
            "or use --searcher random"
        ) from exc
    from ray.tune.search.optuna import OptunaSearch

    startup = min(10, max(2, num_samples // 2))
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)
    return OptunaSearch(sampler=sampler)


def fit_best(
    tuner: tune.Tuner, metric: str, mode: str, log: Callable[[str], None], where: str
) -> tuple[Any, Any, float]:
    """Run the search; returns (all results, the best result, wall seconds).

    Failed trials are logged, not fatal; a search where no trial reported ``metric`` is.
    """
    start = time.perf_counter()
    results = tuner.fit()
    wall_s = time.perf_counter() - start
    if results.errors:
        log(f"  {len(results.errors)} trial(s) failed; first error: {results.errors[0]}")
    best = results.get_best_result(metric=metric, mode=mode, scope="last")
    if best.metrics is None or best.config is None:
        raise ValueError(f"no trial of {where} reported a {metric}")
    return results, best, wall_s
