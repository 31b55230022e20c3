from __future__ import annotations

import pytest
import torch
from torch import nn

from greenflow.platform.models.flops import count_flops, measure_model_flops
from greenflow.platform.models.pool import MODEL_KINDS, probe_context


def test_linear_layer_matches_hand_count() -> None:
    # y = xW^T + b for x (2, 4), W (3, 4): 2*4*3 multiply-adds = 48 FLOPs, + 6 bias adds
    count, _ = count_flops(nn.Linear(4, 3), torch.randn(2, 4))
    assert count.matmul == 48
    assert count.elementwise == 6
    assert count.total == 54


def test_mlp_with_activation_and_reduction() -> None:
    net = nn.Sequential(nn.Linear(5, 7, bias=False), nn.ReLU())
    count, _ = count_flops(lambda x: net(x).sum(), torch.randn(3, 5))
    # matmul 2*3*5*7 = 210; relu 21; sum reduces 21 elements
    assert count.matmul == 210
    assert count.elementwise == 21 + 21


def test_softmax_counts_three_per_element() -> None:
    count, _ = count_flops(torch.softmax, torch.randn(4, 5), -1)
    assert count.total == 3 * 20


def test_bmm_dot_products() -> None:
    # 2 requests x 6 items x dot products of length 8: 2*6*8 multiply-adds
    count, _ = count_flops(torch.bmm, torch.randn(2, 6, 8), torch.randn(2, 8, 1))
    assert count.total == 2 * 2 * 6 * 8


@pytest.mark.parametrize("name", sorted(MODEL_KINDS))
def test_model_costs_are_linear_and_positive(name: str, features) -> None:
    model = MODEL_KINDS[name].model_cls(features)
    cost = measure_model_flops(model, probe_context(features))
    assert cost.flops_per_item > 0 and cost.flops_per_request > 0
    assert cost.cost(10) == pytest.approx(cost.flops_per_request + 10 * cost.flops_per_item)


def test_dssm_serving_cost_is_one_dot_product_per_item(features) -> None:
    model = MODEL_KINDS["dssm"].model_cls(features)
    cost = measure_model_flops(model, probe_context(features))
    assert cost.flops_per_item == 2 * model.config.out_dim


def test_measure_rejects_a_batch(features, context) -> None:
    model = MODEL_KINDS["din"].model_cls(features)
    with pytest.raises(ValueError, match="one request"):
        measure_model_flops(model, context)


def test_scatter_add_counts_one_flop_per_source_element() -> None:
    from greenflow.platform.models.flops import count_flops

    index = torch.tensor([[0, 1, 1, 2]])
    src = torch.ones(1, 4)
    count, out = count_flops(lambda: torch.zeros(1, 3).scatter_add(1, index, src))
    assert out.tolist() == [[1.0, 2.0, 1.0]]
    assert count.total == 4
