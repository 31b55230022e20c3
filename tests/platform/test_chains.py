from __future__ import annotations

import itertools
import math

import pytest

from greenflow.errors import UnknownModelError
from greenflow.platform.chains import (
    Action,
    Chain,
    ChainSpace,
    StageSpace,
    chain_cost,
    chain_costs,
    default_space,
    generate_chains,
)
from greenflow.platform.models.flops import ModelFlops


def test_default_space_has_38_chains_all_satisfying_the_constraints() -> None:
    chains = generate_chains(default_space())
    # 5 recall scales x 4 prerank scales x 2 rank models, minus (k1=50, k2=100) x 2 models
    assert len(chains) == 5 * 4 * 2 - 2
    assert len({c.id for c in chains}) == len(chains)
    for c in chains:
        ks = [a.k for a in c.actions]
        assert ks == sorted(ks, reverse=True) and ks[-1] >= 10


@pytest.mark.parametrize("n_stages", [1, 2, 4])
def test_generator_is_generic_in_stages_and_pools(n_stages: int) -> None:
    stages = tuple(
        StageSpace(f"s{i}", tuple(f"m{i}{j}" for j in range(i + 1)), (5, 10, 20))
        for i in range(n_stages)
    )
    chains = generate_chains(ChainSpace(stages, exposed_k=5))
    feasible_scales = sum(
        1
        for ks in itertools.product((5, 10, 20), repeat=n_stages)
        if all(a >= b for a, b in itertools.pairwise(ks))
    )
    model_choices = math.prod(len(s.models) for s in stages)  # stage i has i + 1 models
    assert len(chains) == feasible_scales * model_choices


def test_no_feasible_chain_is_an_error() -> None:
    space = ChainSpace((StageSpace("only", ("m",), (5,)),), exposed_k=10)
    with pytest.raises(ValueError, match="no chain"):
        generate_chains(space)


def test_bad_stage_space_is_rejected() -> None:
    with pytest.raises(ValueError, match="sorted"):
        StageSpace("s", ("m",), (20, 10))
    with pytest.raises(ValueError, match="at least one"):
        StageSpace("s", (), (10,))


def test_the_space_gives_each_model_its_one_stage() -> None:
    space = default_space()
    assert [space.stage_index(m) for m in ("dssm", "youtube_dnn", "din", "dien")] == [0, 1, 2, 2]
    assert space.stage_index("other", default=0) == 0
    with pytest.raises(UnknownModelError, match="no stage"):
        space.stage_index("other")
    with pytest.raises(ValueError, match="belongs to one stage"):
        ChainSpace((StageSpace("a", ("m",), (10,)), StageSpace("b", ("m",), (10,))))
    with pytest.raises(ValueError, match="unique"):
        ChainSpace((StageSpace("a", ("m",), (10,)), StageSpace("a", ("n",), (10,))))


def test_chain_id_round_trips() -> None:
    chain = Chain((Action("dssm", 400), Action("youtube_dnn", 50), Action("din", 10)))
    assert chain.id == "dssm@400>youtube_dnn@50>din@10"
    assert Chain.parse(chain.id) == chain
    with pytest.raises(ValueError, match="malformed"):
        Chain.parse("dssm400>din@10")


def test_cost_is_sum_of_per_item_times_scored_items_plus_fixed() -> None:
    flops = {"r": ModelFlops(100.0, 2.0), "p": ModelFlops(10.0, 50.0), "k": ModelFlops(1.0, 1000.0)}
    chain = Chain((Action("r", 40), Action("p", 20), Action("k", 10)))
    # recall scores the corpus (N = 1000), prerank 40, rank 20
    assert chain_cost(chain, flops, 1000) == 100 + 2 * 1000 + 10 + 50 * 40 + 1 + 1000 * 20
    costs = chain_costs(
        [chain, Chain((Action("r", 40), Action("p", 10), Action("k", 10)))], flops, 1000
    )
    assert costs[1] < costs[0]
    with pytest.raises(KeyError, match="no measured FLOPs"):
        chain_cost(Chain((Action("x", 10),)), flops, 1000)
