from __future__ import annotations

import pytest
import torch

from greenflow.platform.chains import (
    Action,
    Chain,
    ChainSpace,
    StageSpace,
    default_space,
    generate_chains,
)
from greenflow.platform.reward import encode_chains, thermometer_code


def test_thermometer_code_turns_bits_on_as_k_grows() -> None:
    scales = (50, 100, 200, 400, 800)
    assert thermometer_code(50, scales) == [1, 0, 0, 0, 0]
    assert thermometer_code(200, scales) == [1, 1, 1, 0, 0]
    assert thermometer_code(800, scales) == [1, 1, 1, 1, 1]
    codes = [thermometer_code(k, scales) for k in scales]
    for small, large in zip(codes, codes[1:], strict=False):
        assert all(a <= b for a, b in zip(small, large, strict=True))


def test_default_space_encoding() -> None:
    space = default_space()
    chains = generate_chains(space)
    enc = encode_chains(space, chains)
    assert enc.num_chains == len(chains) == 38
    assert enc.num_stages == 3
    assert enc.pool_sizes == (1, 1, 2)
    assert enc.num_scales == (5, 4, 1)
    assert enc.models.shape == enc.scale_index.shape == enc.prefix_index.shape == (38, 3)
    assert enc.thermometer.shape == (38, 3, 5)
    assert enc.models.dtype == torch.int64 and enc.thermometer.dtype == torch.float32

    j = enc.chain_ids.index("dssm@200>youtube_dnn@20>dien@10")
    assert enc.models[j].tolist() == [0, 0, 1]
    assert enc.scale_index[j].tolist() == [2, 1, 0]
    assert enc.thermometer[j].tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 0, 0, 0],  # 4 prerank scales, padded with 0
        [1, 0, 0, 0, 0],  # 1 rank scale, padded with 0
    ]
    assert enc.stage_codes(1)[j].tolist() == [1, 1, 0, 0]

    for j, chain in enumerate(chains):
        for s, (stage, action) in enumerate(zip(space.stages, chain.actions, strict=True)):
            assert stage.models[int(enc.models[j, s])] == action.model
            assert stage.item_scales[int(enc.scale_index[j, s])] == action.k
            # A thermometer code has exactly scale_index + 1 leading ones.
            assert enc.thermometer[j, s].sum() == enc.scale_index[j, s] + 1


def test_model_prefix_tree_of_default_space() -> None:
    space = default_space()
    enc = encode_chains(space, generate_chains(space))
    # One recall model, one prerank model, two rank models: 1, 1 and 2 model prefixes.
    assert [len(p) for p in enc.prefix_models] == [1, 1, 2]
    assert enc.prefix_models[2].tolist() == [[0, 0, 0], [0, 0, 1]]
    assert [p.tolist() for p in enc.prefix_parent] == [[0], [0], [0, 0]]
    assert torch.equal(enc.prefix_index[:, 2], enc.models[:, 2])


def test_prefix_tree_follows_model_paths() -> None:
    space = ChainSpace(
        stages=(
            StageSpace("a", ("x", "y"), (3, 6)),
            StageSpace("b", ("u", "v", "w"), (2,)),
        ),
        exposed_k=1,
    )
    chains = generate_chains(space)
    enc = encode_chains(space, chains)
    for j in range(enc.num_chains):
        for s in range(enc.num_stages):
            path = enc.prefix_models[s][enc.prefix_index[j, s]]
            assert path.tolist() == enc.models[j, : s + 1].tolist()
            if s > 0:
                parent = enc.prefix_parent[s][enc.prefix_index[j, s]]
                assert parent == enc.prefix_index[j, s - 1]


def test_subset_and_order_are_kept() -> None:
    space = default_space()
    chains = generate_chains(space)[::-5]
    enc = encode_chains(space, chains)
    assert enc.chain_ids == tuple(c.id for c in chains)
    assert enc.pool_sizes == (1, 1, 2) and enc.num_scales == (5, 4, 1)


def test_to_device_copies_every_tensor() -> None:
    space = default_space()
    enc = encode_chains(space, generate_chains(space)).to("cpu")
    assert enc.thermometer.device.type == "cpu"
    assert all(p.device.type == "cpu" for p in enc.prefix_models)


def test_rejects_chains_outside_the_space() -> None:
    space = default_space()
    with pytest.raises(ValueError, match="not in stage"):
        encode_chains(space, [Chain.parse("dssm@300>youtube_dnn@20>din@10")])
    with pytest.raises(ValueError, match="not in stage"):
        encode_chains(space, [Chain.parse("dssm@200>youtube_dnn@20>bert@10")])
    with pytest.raises(ValueError, match="stages"):
        encode_chains(space, [Chain((Action("dssm", 200),))])
    with pytest.raises(ValueError, match="at least one"):
        encode_chains(space, [])
