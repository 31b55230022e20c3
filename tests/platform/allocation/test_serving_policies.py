"""The registered serving policies: how each is written, what it serves, and the message
for a policy written in none of the registered ways."""

from __future__ import annotations

import numpy as np
import pytest

from greenflow.errors import ConfigError
from greenflow.platform.allocation.serving_policies import (
    SERVING_POLICIES,
    FixedChoice,
    serving_chain,
)
from greenflow.platform.chains import default_space, generate_chains

pytestmark = pytest.mark.usefixtures("no_ray")

CHAINS = generate_chains(default_space())
Q = np.linspace(1.0, 2.0, len(CHAINS))  # FLOPs per request, the last chain dearest


def _choice(per_request_flops: float) -> FixedChoice:
    return FixedChoice(CHAINS, Q, train_mean=Q.copy(), per_request_flops=per_request_flops)


def test_the_three_policies() -> None:
    assert SERVING_POLICIES.names() == ("greenflow", "equal", "fixed")
    assert serving_chain("greenflow", _choice(1.0)) is None
    assert serving_chain(f"fixed:{CHAINS[3].id}", _choice(0.0)) == 3
    assert serving_chain("equal", _choice(float(Q.max()))) == len(CHAINS) - 1  # all fit
    assert serving_chain("equal", _choice(0.0)) == 0  # none fits: the cheapest


@pytest.mark.parametrize("bad", ["oracle", "fixed", "greenflow:x", "equal:"])
def test_a_policy_written_otherwise_lists_the_ways(bad: str) -> None:
    message = f"policy must be 'greenflow', 'equal' or 'fixed:<chain id>', got {bad!r}"
    with pytest.raises(ConfigError) as err:
        serving_chain(bad, _choice(1.0))
    assert str(err.value) == message


def test_an_unknown_chain_id_says_how_many_there_are() -> None:
    with pytest.raises(ConfigError, match=rf"'nope' is not one of the {len(CHAINS)} chains"):
        serving_chain("fixed:nope", _choice(1.0))
