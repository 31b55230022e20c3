"""ExactScript: TorchScript where it gives the same floats, the Python function otherwise."""

from __future__ import annotations

import numpy as np
import torch

from greenflow.platform.models import scripted
from greenflow.platform.models.scripted import ExactScript


def _step(x: torch.Tensor, w: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        x = torch.tanh(x @ w + 0.5 * x)
    return x


def test_a_scriptable_function_runs_scripted_with_the_same_floats() -> None:
    fn = ExactScript(_step)
    assert fn.scripted is None  # decided on the first call
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    for steps in (3, 0, 7, 3, 3):
        assert torch.equal(fn(x, w, steps), _step(x, w, steps))
    assert fn.scripted is True


def test_an_unscriptable_or_inexact_function_stays_python(monkeypatch, caplog) -> None:
    def unscriptable(x: torch.Tensor) -> torch.Tensor:
        return x * float(np.float64(3.0))  # TorchScript does not know numpy

    fn = ExactScript(unscriptable)
    x = torch.ones(2)
    assert torch.equal(fn(x), x * 3) and torch.equal(fn(x), x * 3)
    assert fn.scripted is False

    def off_by_one_ulp(f):  # a "script" that is off in the last bit
        return lambda *a: torch.nextafter(f(*a), torch.tensor(float("inf"), dtype=torch.float64))

    monkeypatch.setattr(scripted.torch.jit, "script", off_by_one_ulp)
    inexact = ExactScript(_step)
    x, w = torch.randn(4, 3, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64)
    assert torch.equal(inexact(x, w, 2), _step(x, w, 2))
    assert torch.equal(inexact(x, w, 2), _step(x, w, 2)) and inexact.scripted is False
    assert "runs as Python, not TorchScript" in caplog.text
