from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from greenflow.platform.chains import Chain, ChainSpace, StageSpace, default_space, generate_chains
from greenflow.platform.models.features import (
    Context,
    FeatureSet,
    FeatureSpec,
    make_context,
    pad_histories,
)
from greenflow.platform.reward import (
    BASES,
    VARIANTS,
    RewardModel,
    RewardModelConfig,
    encode_chains,
    reward_loss,
)

FEATURES = FeatureSet(
    user=(FeatureSpec("age", 5), FeatureSpec("gender", 3)),
    item=(FeatureSpec("genre", 4),),
    num_items=30,
    max_history=6,
)
SPACE = default_space()
CHAINS = generate_chains(SPACE)
ENCODING = encode_chains(SPACE, CHAINS)


def random_context(
    rng: np.random.Generator, batch: int, features: FeatureSet = FEATURES
) -> Context:
    """Random users, histories of random length (including empty) and activity counts."""
    user_feats = np.stack(
        [rng.integers(0, f.vocab_size, size=batch) for f in features.user], axis=1
    ).astype(np.int64)
    histories = [
        rng.integers(1, features.num_items + 1, size=rng.integers(0, 2 * features.max_history))
        for _ in range(batch)
    ]
    ctx = make_context(user_feats, pad_histories(histories, features.max_history))
    ctx["activity"] = torch.from_numpy(rng.integers(0, 2000, size=batch))
    return ctx


def larger_scale_pairs(space: ChainSpace, chains: list[Chain]) -> list[tuple[int, int]]:
    """(j, j') where chain j' equals chain j except for a larger k at one stage."""
    index = {c.actions: j for j, c in enumerate(chains)}
    pairs = []
    for j, chain in enumerate(chains):
        for s, stage in enumerate(space.stages):
            action = chain.actions[s]
            for k in stage.item_scales:
                if k > action.k:
                    bigger = list(chain.actions)
                    bigger[s] = dataclasses.replace(action, k=k)
                    if tuple(bigger) in index:
                        pairs.append((j, index[tuple(bigger)]))
    return pairs


def randomize_weights(model: torch.nn.Module, seed: int, scale: float | None) -> None:
    """Re-draw every parameter: default init under ``seed``, or N(0, scale²) if given."""
    gen = torch.Generator().manual_seed(seed)
    if scale is None:
        torch.manual_seed(seed)
        for module in model.modules():
            if module is not model and hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)


@pytest.fixture()
def ctx() -> Context:
    return random_context(np.random.default_rng(0), batch=4)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_shapes_positive_and_finite(variant: str, ctx: Context) -> None:
    model = RewardModel(FEATURES, SPACE, VARIANTS[variant])
    q = model(ctx, ENCODING)
    assert q.shape == (4, 38)
    assert torch.isfinite(q).all()
    assert (q > 0).all()  # a Poisson rate: softplus weights and the always-on first bit


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradient_reaches_every_parameter(variant: str, ctx: Context) -> None:
    model = RewardModel(FEATURES, SPACE, VARIANTS[variant])
    target = torch.randint(0, 4, (4, 38))
    reward_loss(model(ctx, ENCODING), target).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_one_batched_pass_equals_chain_by_chain(variant: str, ctx: Context) -> None:
    model = RewardModel(FEATURES, SPACE, VARIANTS[variant]).eval()
    with torch.no_grad():
        together = model(ctx, ENCODING)  # (B, J)
        alone = torch.cat([model(ctx, encode_chains(SPACE, [c])) for c in CHAINS], dim=1)
        reordered = model(ctx, encode_chains(SPACE, CHAINS[::-1]))
    torch.testing.assert_close(together, alone, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(together, reordered.flip(1), rtol=1e-6, atol=1e-6)


def test_requests_are_scored_independently(ctx: Context) -> None:
    model = RewardModel(FEATURES, SPACE).eval()
    with torch.no_grad():
        batch = model(ctx, ENCODING)
        single = model({k: v[2:3] for k, v in ctx.items()}, ENCODING)
    torch.testing.assert_close(batch[2:3], single, rtol=1e-6, atol=1e-6)


def test_default_space_has_pairs_at_every_multi_scale_stage() -> None:
    pairs = larger_scale_pairs(SPACE, CHAINS)
    changed = {
        int((ENCODING.scale_index[a] != ENCODING.scale_index[b]).nonzero()) for a, b in pairs
    }
    assert changed == {0, 1}  # the rank stage has a single scale


@pytest.mark.parametrize("variant", list(VARIANTS))
@settings(max_examples=30, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([None, 1.0, 3.0, 10.0]),
    dtype=st.sampled_from([torch.float32, torch.float64]),
)
def test_monotone_in_every_item_scale(
    variant: str, seed: int, scale: float | None, dtype: torch.dtype
) -> None:
    """Raising any k_s (same models) never lowers Q, for random contexts and weights."""
    model = RewardModel(FEATURES, SPACE, VARIANTS[variant]).to(dtype)
    randomize_weights(model, seed, scale)
    ctx = random_context(np.random.default_rng(seed), batch=3)
    with torch.no_grad():
        q = model(ctx, ENCODING).double()
    assert torch.isfinite(q).all()
    small, large = zip(*larger_scale_pairs(SPACE, CHAINS), strict=True)
    q_small, q_large = q[:, list(small)], q[:, list(large)]
    # Large weights push Q to ~1e12 and beyond, where float32 rounding (vectorised exp,
    # sums) differs between equal inputs by an ulp; a real violation would be O(|Q|).
    tol = 1e-6 + 8 * torch.finfo(dtype).eps * q_small.abs()
    assert (q_large >= q_small - tol).all(), (
        f"Q fell by {(q_small - q_large).max().item():.3g} when a k_s grew"
    )


@st.composite
def chain_spaces(draw: st.DrawFn) -> ChainSpace:
    n_stages = draw(st.integers(1, 3))
    stages = tuple(
        StageSpace(
            f"s{s}",
            tuple(f"m{s}_{i}" for i in range(draw(st.integers(1, 2)))),
            tuple(sorted(draw(st.sets(st.integers(1, 40), min_size=1, max_size=4)))),
        )
        for s in range(n_stages)
    )
    return ChainSpace(stages, exposed_k=1)


@settings(max_examples=30, deadline=None)
@given(
    space=chain_spaces(),
    variant=st.sampled_from(list(VARIANTS)),
    seed=st.integers(0, 2**31 - 1),
    scale=st.sampled_from([None, 1.0, 10.0]),
)
def test_monotone_in_random_spaces(
    space: ChainSpace, variant: str, seed: int, scale: float | None
) -> None:
    try:
        chains = generate_chains(space)
    except ValueError:
        assume(False)  # no chain satisfies k_1 >= ... >= k_S in this draw
        raise
    model = RewardModel(FEATURES, space, VARIANTS[variant])
    randomize_weights(model, seed, scale)
    with torch.no_grad():
        q = model(random_context(np.random.default_rng(seed), 2), encode_chains(space, chains))
    assert q.shape == (2, len(chains)) and (q >= 0).all()
    for small, large in larger_scale_pairs(space, chains):
        tol = 1e-6 + 8 * torch.finfo(q.dtype).eps * q[:, small].abs()
        assert (q[:, large] >= q[:, small] - tol).all()


def test_variants_are_the_four_switch_combinations() -> None:
    switches = {name: (c.recursive, c.multi_basis) for name, c in VARIANTS.items()}
    assert switches == {
        "full": (True, True),
        "no-recursion": (False, True),
        "no-basis": (True, False),
        "plain": (False, False),
    }
    for name, config in VARIANTS.items():
        assert config.variant == name
    assert dataclasses.replace(VARIANTS["plain"], state_dim=8).variant == "plain"


@pytest.mark.parametrize("name", sorted(BASES))
def test_bases_are_zero_at_zero_increasing_and_concave(name: str) -> None:
    z = torch.linspace(0, 20, 401, dtype=torch.float64)
    phi = BASES[name](z)
    assert phi[0] == 0
    slope = phi.diff()
    assert (slope > 0).all()
    assert (slope.diff() <= 1e-12).all()


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="bases"):
        RewardModelConfig(bases=("log1p", "cube"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bases"):
        RewardModelConfig(bases=())
    with pytest.raises(ValueError, match="state_dim"):
        RewardModelConfig(state_dim=0)
    assert RewardModelConfig(multi_basis=False).units == 1
    assert RewardModelConfig(bases=("exp",), units_per_basis=3).units == 3


def test_rejects_mismatched_encoding_and_context(ctx: Context) -> None:
    model = RewardModel(FEATURES, SPACE)
    other = default_space(rank_models=("din",))
    with pytest.raises(ValueError, match="does not match"):
        model(ctx, encode_chains(other, generate_chains(other)))
    with pytest.raises(ValueError, match="activity"):
        model({k: v for k, v in ctx.items() if k != "activity"}, ENCODING)
    with pytest.raises(ValueError, match="shapes"):
        model({**ctx, "activity": ctx["activity"][:2]}, ENCODING)


def test_poisson_loss_is_smallest_at_the_mean_count() -> None:
    target = torch.tensor([0.0, 1.0, 2.0, 1.0])
    losses = {q: reward_loss(torch.full((4,), q), target).item() for q in (0.5, 1.0, 1.5)}
    assert min(losses, key=losses.__getitem__) == 1.0
    assert reward_loss(torch.tensor([1.0, 3.0]), torch.tensor([1, 1]), "mse").item() == 2.0
    assert torch.isfinite(reward_loss(torch.zeros(3), torch.ones(3)))  # Q = 0 underflow guard
    with pytest.raises(ValueError, match="differ"):
        reward_loss(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match="unknown"):
        reward_loss(torch.zeros(3), torch.zeros(3), "huber")  # type: ignore[arg-type]
