"""The allocator's own computation: scoring all chains of a request with the reward model."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from greenflow.platform.chains import default_space, generate_chains
from greenflow.platform.models.features import (
    Context,
    FeatureSet,
    FeatureSpec,
    make_context,
    pad_histories,
)
from greenflow.platform.models.flops import count_flops
from greenflow.platform.reward import VARIANTS, RewardModel, encode_chains, reward_flops_per_request

# ML-100k-sized inputs: 4 user fields, 1682 items, a full 50-item history.
FEATURES = FeatureSet(
    user=(
        FeatureSpec("age", 8),
        FeatureSpec("gender", 3),
        FeatureSpec("occupation", 22),
        FeatureSpec("zip", 800),
    ),
    item=(FeatureSpec("genre", 19),),
    num_items=1682,
    max_history=50,
)
# The default chain of the default cascade costs ~10-45 MFLOPs per request; the low end
# is the strictest reference.
REFERENCE_CASCADE_FLOPS = 10e6
MAX_OVERHEAD = 0.03  # the paper reports +3-8%


def probe(batch: int) -> Context:
    history = [list(range(1, FEATURES.max_history + 1))] * batch
    ctx = make_context(np.ones((batch, 4), dtype=np.int64), pad_histories(history, 50))
    ctx["activity"] = torch.full((batch,), 120)
    return ctx


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_all_chain_pass_is_a_small_fraction_of_the_cascade(variant: str) -> None:
    space = default_space()
    chains = encode_chains(space, generate_chains(space))
    model = RewardModel(FEATURES, space, VARIANTS[variant])
    flops = reward_flops_per_request(model, chains, probe(1))
    ratio = flops / REFERENCE_CASCADE_FLOPS
    print(
        f"{variant}: {flops} FLOPs per request for {chains.num_chains} chains = "
        f"{ratio:.3%} of 10 MFLOPs, {flops / 45e6:.3%} of 45 MFLOPs"
    )
    assert 0 < ratio < MAX_OVERHEAD


def test_cost_is_per_request_and_shared_across_chains() -> None:
    space = default_space()
    chain_list = generate_chains(space)
    chains = encode_chains(space, chain_list)
    model = RewardModel(FEATURES, space).eval()
    one = count_flops(model, probe(1), chains)[0].total
    # No work across requests: B requests cost B times one.
    assert count_flops(model, probe(4), chains)[0].total == 4 * one
    # h_0 and the model-prefix blocks are shared: all chains at once cost far less than
    # scoring them one by one.
    separately = sum(
        count_flops(model, probe(1), encode_chains(space, [c]))[0].total for c in chain_list
    )
    assert one < separately / 5


def test_measure_rejects_a_batch() -> None:
    space = default_space()
    model = RewardModel(FEATURES, space)
    with pytest.raises(ValueError, match="one request"):
        reward_flops_per_request(model, encode_chains(space, generate_chains(space)), probe(2))
