"""The traced reward forward serves the same Q to the bit, or is not used."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenflow.platform.reward import VARIANTS, RewardModel
from greenflow.platform.reward import traced as traced_module
from greenflow.platform.reward.traced import trace_reward
from tests.platform.reward.test_model import (
    ENCODING,
    FEATURES,
    SPACE,
    random_context,
    randomize_weights,
)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_every_variant_traces_and_equals_the_model_to_the_bit(variant: str) -> None:
    model = RewardModel(FEATURES, SPACE, VARIANTS[variant]).eval()
    randomize_weights(model, seed=1, scale=0.5)
    forward, traced = trace_reward(model, ENCODING, FEATURES)
    assert traced and isinstance(forward, torch.jit.ScriptModule)
    rng = np.random.default_rng(2)
    with torch.no_grad():
        for batch in (1, 4, 5, 33):  # other sizes than the trace's checks, empty histories too
            ctx = random_context(rng, batch)
            q = forward(ctx["user_feats"], ctx["history"], ctx["activity"])
            assert torch.equal(q, model(ctx, ENCODING)), batch


def test_a_trace_that_fails_or_differs_falls_back_to_the_model(monkeypatch, caplog) -> None:
    model = RewardModel(FEATURES, SPACE).eval()
    ctx = random_context(np.random.default_rng(3), 3)

    class Off(torch.nn.Module):  # a "trace" that is off in the last bit
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, *args: torch.Tensor) -> torch.Tensor:
            return torch.nextafter(self.inner(*args), torch.tensor(np.inf))

    for fake in (lambda m, *a, **k: Off(m), lambda *a, **k: 1 / 0):
        monkeypatch.setattr(traced_module.torch.jit, "trace", fake)
        forward, traced = trace_reward(model, ENCODING, FEATURES)
        assert not traced
        with torch.no_grad():
            q = forward(ctx["user_feats"], ctx["history"], ctx["activity"])
            assert torch.equal(q, model(ctx, ENCODING))
    assert "runs eagerly, not traced" in caplog.text
