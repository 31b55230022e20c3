"""The reward model's serving forward as one TorchScript graph, used only where it is exact.

An allocator replica scores every request with the reward model: ~100 small tensor ops
(~29k FLOPs). Run from Python, each op releases and re-takes the GIL, and in a Serve
replica other Python threads (Ray's and Serve's event loops) take it in between: one
request's forward, ~0.9 ms alone, took ~2.6 ms beside a thread that wants the GIL every
0.2 ms, and ~2.6-3.0 ms in the served allocator (``bench/serving.py`` (d)). A traced graph
runs all the ops in C++ with one release: ~0.45 ms alone, ~0.95 ms beside that thread.

It runs the same ops in the same order, so Q is the same to the bit; ``trace_reward``
checks that on batches of several sizes and falls back to the eager model (with a
warning) when a trace fails or differs in any bit (``models.scripted.exact_trace``), so a
model or torch version that does not trace cleanly is served as before.
``torch.jit.trace`` is deprecated in favour of ``torch.compile``/``torch.export``; those
compile kernels of their own (other floats, and minutes of compilation on a small node) or
run the graph op by op from Python again.

Units: Q clicks; the inputs are the reward model's context tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from greenflow.platform.models.features import FeatureSet, random_context
from greenflow.platform.models.scripted import exact_trace
from greenflow.platform.reward.encoding import ChainEncoding
from greenflow.platform.reward.model import RewardModel

# (user_feats (B, F_u), history (B, L), activity (B,)) int64 -> Q (B, J)
RewardForward = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
CHECK_BATCHES = (1, 2, 3, 8, 32)  # batch sizes a trace must reproduce exactly
SEED = 0


class _Forward(nn.Module):
    """The model on one fixed chain encoding, with the context as positional tensors."""

    def __init__(self, model: RewardModel, encoding: ChainEncoding) -> None:
        super().__init__()
        self.model = model
        self.encoding = encoding

    def forward(
        self, user_feats: torch.Tensor, history: torch.Tensor, activity: torch.Tensor
    ) -> torch.Tensor:
        ctx = {"user_feats": user_feats, "history": history, "activity": activity}
        return self.model(ctx, self.encoding)


def _example(features: FeatureSet, batch: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """A batch of random valid contexts; some rows' histories are short or empty."""
    user, history = random_context(features, batch, gen)
    return user, history, torch.randint(0, 5000, (batch,), generator=gen)


def trace_reward(model: RewardModel, encoding: ChainEncoding, features: FeatureSet
                 ) -> tuple[RewardForward, bool]:  # fmt: skip
    """The forward to serve with, and whether it is the traced graph.

    ``model`` must be in eval mode; the forward is for use under ``torch.no_grad``.
    """
    eager = _Forward(model, encoding).eval()
    gen = torch.Generator().manual_seed(SEED)
    example = _example(features, 2, gen)
    checks = [_example(features, b, gen) for b in CHECK_BATCHES]
    with torch.no_grad():
        return exact_trace(eager, example, checks, "the reward model")
