"""Measured FLOPs of cascade models.

Convention (``FLOPS_CONVENTION``): 2 FLOPs per multiply-add for matrix products, counted by
``torch.utils.flop_counter``'s formulas (mm, addmm, bmm, baddbmm, convolutions, attention);
plus what that counter misses, counted here explicitly per output element: bias adds of
addmm/baddbmm, elementwise arithmetic and activations (1 FLOP each; sigmoid, tanh, exp
count as 1), softmax (3 per element: exp, sum, divide), reductions (1 per input
element) and scatter-adds (1 per source element). Embedding lookups, indexing, concatenation and masking by selection move data
and count 0 FLOPs.

Per-request and per-item costs of a model are measured by running its two halves
(``encode_user`` once, ``score`` on n = 1, 9 and 17 items) under the counter and fitting
the line flops(n) = per_request + per_item · n; non-linearity raises.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from greenflow.platform.models.base import CascadeModel
from greenflow.platform.models.features import Context

FLOPS_CONVENTION = (
    "2 FLOPs per multiply-add (torch.utils.flop_counter formulas for matrix products) "
    "+ 1 FLOP per output element of bias adds, elementwise ops and activations, "
    "3 per softmax element, 1 per reduced input element, 1 per scatter-added element; "
    "embedding lookups and indexing count 0"
)

aten = torch.ops.aten
_ELEMENTWISE = {
    aten.add, aten.sub, aten.rsub, aten.mul, aten.div, aten.neg, aten.relu, aten.sigmoid,
    aten.tanh, aten.exp, aten.log, aten.log1p, aten.sqrt, aten.rsqrt, aten.pow, aten.abs,
    aten.clamp, aten.clamp_min, aten.clamp_max, aten.maximum, aten.minimum, aten.reciprocal,
    aten.gelu, aten.silu, aten.leaky_relu, aten.prelu, aten._prelu_kernel, aten.softplus,
    aten.addcmul, aten.lerp,
}  # fmt: skip
_SOFTMAX = {aten._softmax, aten._log_softmax, aten.softmax, aten.log_softmax}
_REDUCTIONS = {aten.sum, aten.mean, aten.amax, aten.amin, aten.prod}
_SCATTER_ADDS = {aten.scatter_add, aten.index_add}  # 1 add per source element
_BIASED = {aten.addmm, aten.baddbmm}


def _numel(x: Any) -> int:
    return x.numel() if isinstance(x, torch.Tensor) else 0


@dataclass
class FlopCount:
    """FLOPs split by where they were counted."""

    matmul: int = 0
    elementwise: int = 0

    @property
    def total(self) -> int:
        return self.matmul + self.elementwise


class _CountingMode(TorchDispatchMode):
    def __init__(self, count: FlopCount) -> None:
        super().__init__()
        self.count = count

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        packet = func._overloadpacket
        if packet in flop_registry:
            self.count.matmul += int(flop_registry[packet](*args, **kwargs, out_val=out))
            if packet in _BIASED:
                self.count.elementwise += _numel(out)
        elif packet in _ELEMENTWISE:
            self.count.elementwise += _numel(out)
        elif packet in _SOFTMAX:
            self.count.elementwise += 3 * _numel(out)
        elif packet in _REDUCTIONS:
            self.count.elementwise += _numel(args[0])
        elif packet in _SCATTER_ADDS:
            self.count.elementwise += _numel(args[3] if len(args) > 3 else kwargs.get("source"))
        return out


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[FlopCount, Any]:
    """Run ``fn`` under the counter; returns (FLOPs, fn's result)."""
    count = FlopCount()
    with torch.no_grad(), _CountingMode(count):
        result = fn(*args, **kwargs)
    return count, result


@dataclass(frozen=True)
class ModelFlops:
    """Measured cost of one model: FLOPs per request (fixed) and per scored item."""

    flops_per_request: float
    flops_per_item: float

    def cost(self, n_items: float) -> float:
        return self.flops_per_request + self.flops_per_item * n_items


def measure_model_flops(model: CascadeModel, ctx: Context, probe_items: int = 8) -> ModelFlops:
    """Measure a model's serving cost on a single-request context ``ctx`` (B = 1).

    The history is the full padded length L = max_history, which is what a batched
    model computes for every request.
    """
    if ctx["history"].shape[0] != 1:
        raise ValueError(f"measure on one request; got batch {tuple(ctx['history'].shape)}")
    was_training = model.training
    model.eval()
    model.prepare_for_serving()
    try:
        user_count, state = count_flops(model.encode_user, ctx)
        sizes = (1, 1 + probe_items, 1 + 2 * probe_items)
        totals = []
        for n in sizes:
            items = (torch.arange(n) % model.features.num_items + 1).unsqueeze(0)
            totals.append(count_flops(model.score, state, items)[0].total)
    finally:
        model.train(was_training)
    per_item = (totals[1] - totals[0]) / probe_items
    if totals[2] - totals[1] != totals[1] - totals[0]:
        raise ValueError(f"{type(model).__name__}: scoring FLOPs are not linear in items: {totals}")
    return ModelFlops(
        flops_per_request=float(user_count.total + totals[0] - per_item),
        flops_per_item=float(per_item),
    )
