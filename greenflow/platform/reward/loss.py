"""Training loss of the reward model (DESIGN.md §2, "Reward model").

The target R_ij is a click count in {0, ..., K} and the model's output Q_ij >= 0 is its
expected value. The Poisson negative log-likelihood, Q - R·log Q, is the natural loss for
a count with mean Q: it is minimised in expectation at Q = E[R], weighs errors relative to
the rate (a miss of 1 click matters more at Q = 0.2 than at Q = 5), and its gradient
1 - R/Q does not vanish for the many requests with few clicks. MSE is kept for comparison;
it also targets E[R] but lets the rare high-click requests dominate.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

LossKind = Literal["poisson", "mse"]

# Keeps log Q finite where Q underflows to 0 (Q > 0 in exact arithmetic).
POISSON_EPS = 1e-8


def reward_loss(
    pred: torch.Tensor, target: torch.Tensor, kind: LossKind = "poisson"
) -> torch.Tensor:
    """Mean loss over all entries of ``pred`` (clicks, >= 0) and ``target`` (clicks), same shape.

    ``poisson``: Q - R·log(Q + eps) (the Stirling term of the full NLL is constant in Q and
    omitted); ``mse``: (Q - R)².
    """
    if pred.shape != target.shape:
        raise ValueError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    target = target.to(pred.dtype)
    if kind == "poisson":
        return F.poisson_nll_loss(pred, target, log_input=False, full=False, eps=POISSON_EPS)
    if kind == "mse":
        return F.mse_loss(pred, target)
    raise ValueError(f"unknown loss kind {kind!r}; use 'poisson' or 'mse'")
