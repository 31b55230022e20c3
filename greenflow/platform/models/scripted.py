"""Python tensor code run as TorchScript where that gives the same floats.

A loop of small tensor ops (DIEN's AUGRU: ~12 ops per step, ~20 steps) pays the Python
interpreter per op, and every op releases and re-takes the GIL; in a Serve replica other
Python threads (Ray's and Serve's event loops) take it in between. Scripted, the loop runs
in C++ with one release (DIEN on 100 candidates: ~3.3-3.9 -> ~2.6-3.0 ms alone, 6.0 ->
5.2 ms beside a thread that wants the GIL every 0.2 ms).

TorchScript runs the same ATen ops in the same order (no CPU fusion by default), so the
results are the same to the bit; ``ExactScript`` checks that on its first call and keeps
the Python function for good if scripting fails or any bit differs (a warning says so).
``exact_trace`` does the same for a whole forward without data-dependent control flow
(the reward model, DSSM, YouTube DNN), traced on one example and checked on others.
``torch.jit.script`` is deprecated in favour of ``torch.compile``, which compiles kernels of
its own: other floats, and minutes of compilation on a small node.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

logger = logging.getLogger(__name__)
PROFILING_RUNS = 2  # TorchScript's profiling executor runs a function this often first


class ExactScript:
    """``fn`` (tensor-returning, TorchScript-compatible), scripted when exact.

    The first call scripts ``fn``, runs both and compares the outputs bit for bit; from
    then on it runs the scripted function, or ``fn`` if scripting failed or differed.
    Meant for no-grad use (serving and simulation), where gradients are not needed.
    """

    def __init__(self, fn: Callable[..., torch.Tensor]) -> None:
        self.fn = fn
        self._run: Callable[..., torch.Tensor] | None = None
        self._lock = threading.Lock()

    @property
    def scripted(self) -> bool | None:
        """Whether calls run scripted (None before the first call)."""
        return None if self._run is None else self._run is not self.fn

    def __call__(self, *args: Any) -> torch.Tensor:
        if self._run is None:
            with self._lock:
                if self._run is None:
                    expected = self.fn(*args)
                    self._run = self._choose(args, expected)
                    return expected
        return self._run(*args)

    def _choose(self, args: tuple[Any, ...], expected: torch.Tensor) -> Callable[..., torch.Tensor]:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # TorchScript's deprecation (docstring)
                script = torch.jit.script(self.fn)
            if not _same_in_every_run(script, args, expected):
                raise ValueError("the scripted function differs in some bit")
        except Exception as err:
            logger.warning("%s runs as Python, not TorchScript: %s: %s",
                           self.fn.__name__, type(err).__name__, err)  # fmt: skip
            return self.fn
        return script


def exact_trace(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    checks: Sequence[tuple[torch.Tensor, ...]],
    what: str,
) -> tuple[Callable[..., torch.Tensor], bool]:
    """``module`` traced on ``example`` if the trace equals it to the bit on every input of
    ``checks`` (other batch sizes and shapes: a trace fixes Python-side shape logic), with
    whether it is the trace; else ``module`` itself (a warning names ``what``).

    Call it in the grad mode the forward will run in (``torch.no_grad`` or
    ``torch.inference_mode``).
    """
    try:
        with warnings.catch_warnings():
            # The tracer warns at Python-side input checks (constants in a trace) and that
            # tracing is deprecated (module docstring).
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(module, example, check_trace=False)
            for inputs in checks:
                if not _same_in_every_run(traced, inputs, module(*inputs)):
                    shapes = [tuple(t.shape) for t in inputs]
                    raise ValueError(f"the trace differs from the model on inputs {shapes}")
    except Exception as err:  # any failure: the module, as before
        logger.warning("%s runs eagerly, not traced: %s: %s", what, type(err).__name__, err)
        return module, False
    return traced, True


def _same_in_every_run(
    compiled: Callable[..., torch.Tensor], args: tuple[Any, ...], expected: torch.Tensor
) -> bool:
    """Whether ``compiled(*args)`` equals ``expected`` to the bit in its profiled runs and
    its first optimised one (TorchScript optimises from run ``PROFILING_RUNS + 1`` on)."""
    return all(torch.equal(compiled(*args), expected) for _ in range(PROFILING_RUNS + 1))
