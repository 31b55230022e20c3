"""The policies the Serve app can run, registered by name (``greenflow serve --policy``,
``AppArgs.policy``).

A policy is written ``<name>`` or, for one that takes an argument, ``<name>:<argument>``
(``fixed:<chain id>``). ``SERVING_POLICIES`` maps the name to a ``ServingPolicy``: how it
is written (for messages) and the chain it serves everyone, or None when the allocator
chooses per request (GreenFlow). A new baseline is one function of ``FixedChoice`` plus
one ``register`` line. numpy only, no Ray.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from greenflow.errors import ConfigError
from greenflow.platform.allocation.baselines import EqualPolicy
from greenflow.platform.chains import Chain
from greenflow.platform.registry import Registry


@dataclass(frozen=True)
class FixedChoice:
    """What a serving policy may look at to pick the one chain it serves everyone."""

    chains: Sequence[Chain]
    q: np.ndarray  # (J,) FLOPs per request of each chain
    train_mean: np.ndarray  # (J,) mean true clicks per chain on the reward split
    per_request_flops: float  # the budget per expected request (FLOPs)


@dataclass(frozen=True)
class ServingPolicy:
    """``usage``: how the policy is written (``"fixed:<chain id>"``; a ``:`` means it takes
    an argument); ``chain(choice, argument)``: the chain index it serves, None to choose."""

    usage: str
    chain: Callable[[FixedChoice, str], int | None]

    @property
    def takes_argument(self) -> bool:
        return ":" in self.usage


def _greenflow(choice: FixedChoice, argument: str) -> int | None:
    return None  # the allocator chooses per request


def _equal(choice: FixedChoice, argument: str) -> int | None:
    """The best fixed chain by mean training clicks whose cost fits the budget per
    expected request (``EqualPolicy``)."""
    return int(
        EqualPolicy(choice.train_mean, choice.q, 1).allocate(choice.per_request_flops).choice[0]
    )


def _fixed(choice: FixedChoice, argument: str) -> int | None:
    """The chain whose id is ``argument``."""
    ids = [c.id for c in choice.chains]
    if argument not in ids:
        raise ConfigError(
            f"policy {f'fixed:{argument}'!r}: {argument!r} is not one of the {len(ids)} chains"
        )
    return ids.index(argument)


SERVING_POLICIES: Registry[ServingPolicy] = Registry("policy")
SERVING_POLICIES.register("greenflow", ServingPolicy("greenflow", _greenflow))
SERVING_POLICIES.register("equal", ServingPolicy("equal", _equal))
SERVING_POLICIES.register("fixed", ServingPolicy("fixed:<chain id>", _fixed))


def serving_chain(policy: str, choice: FixedChoice) -> int | None:
    """The chain ``policy`` serves everyone (None for GreenFlow, which chooses); a
    ConfigError naming the ways a policy can be written when it is none of them."""
    name, colon, argument = policy.partition(":")
    entry = SERVING_POLICIES.get(name) if name in SERVING_POLICIES else None
    if entry is None or entry.takes_argument != bool(colon):
        usages = [repr(p.usage) for _, p in SERVING_POLICIES.items()]
        raise ConfigError(
            f"policy must be {', '.join(usages[:-1])} or {usages[-1]}, got {policy!r}"
        )
    return entry.chain(choice, argument)


__all__ = ["SERVING_POLICIES", "FixedChoice", "ServingPolicy", "serving_chain"]
