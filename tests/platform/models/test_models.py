from __future__ import annotations

import numpy as np
import pytest
import torch

from greenflow.platform.models import dien
from greenflow.platform.models.features import make_context, pad_histories
from greenflow.platform.models.pool import MODEL_KINDS


@pytest.fixture(params=sorted(MODEL_KINDS))
def model(request, features):
    torch.manual_seed(0)
    m = MODEL_KINDS[request.param].model_cls(features)
    m.eval()
    return m


def test_scores_have_shape_batch_by_items(model, context) -> None:
    items = torch.randint(1, 31, (3, 7))
    assert model(context, items).shape == (3, 7)


def test_encode_then_score_equals_forward(model, context) -> None:
    items = torch.randint(1, 31, (3, 5))
    with torch.no_grad():
        torch.testing.assert_close(
            model.score(model.encode_user(context), items), model(context, items)
        )


def test_per_request_scores_do_not_depend_on_the_rest_of_the_batch(model, context) -> None:
    items = torch.randint(1, 31, (3, 4))
    with torch.no_grad():
        batched = model(context, items)
        single = model({k: v[1:2] for k, v in context.items()}, items[1:2])
    torch.testing.assert_close(batched[1:2], single, rtol=1e-5, atol=1e-6)


def test_left_padding_does_not_change_scores(model, features) -> None:
    # a history of two clicks scores the same unpadded and left-padded to max_history
    unpadded = make_context(np.array([[1, 1]]), np.array([[5, 6]]))
    padded = make_context(np.array([[1, 1]]), pad_histories([[5, 6]], features.max_history))
    items = torch.tensor([[3, 9, 12]])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, items), model(unpadded, items))


def test_dien_skipping_all_padding_steps_changes_no_bit(features, context, monkeypatch) -> None:
    # DIEN skips the history steps that are padding in every row of the batch; running
    # them all must give the very same float64 scores (served items depend on every bit)
    model = _dien(features)
    short = {k: v[:2] for k, v in context.items()}  # histories of 3 clicks and none
    items = torch.randint(1, 31, (2, 5))
    with torch.no_grad():
        skipped = model(short, items)
        monkeypatch.setattr(dien, "_first_step", lambda mask: 0)
        assert torch.equal(model(short, items), skipped)


def test_serving_index_matches_training_path(features, context) -> None:
    model = MODEL_KINDS["dssm"].model_cls(features)
    model.eval()
    items = torch.randint(1, 31, (3, 6))
    with torch.no_grad():
        expected = model(context, items)
        model.prepare_for_serving()
        torch.testing.assert_close(model(context, items), expected)


def test_wrong_number_of_user_fields_raises_with_shapes(model, features) -> None:
    ctx = make_context(
        np.ones((2, 5), dtype=np.int64), pad_histories([[1], [2]], features.max_history)
    )
    with pytest.raises(ValueError, match="fields"):
        model(ctx, torch.ones(2, 3, dtype=torch.int64))


def test_models_train_one_step(model, context) -> None:
    model.train()
    items = torch.randint(1, 31, (3, 2))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        model(context, items), torch.ones(3, 2)
    )
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)


def _dien(features) -> dien.DIEN:
    torch.manual_seed(0)
    return MODEL_KINDS["dien"].model_cls(features).double().eval()


@pytest.mark.parametrize("histories", [[[4, 9, 2]], [[4, 9, 2], [], [7], list(range(1, 12))]])
def test_dien_fused_extractor_matches_the_step_loop(features, histories) -> None:
    # serving (inference mode) runs the GRU fused over each row's real steps: the same
    # states as the GRUCell loop to float64 rounding, zeros at padding and for no history
    model = _dien(features)
    ctx = make_context(np.ones((len(histories), 2), dtype=np.int64),
                       pad_histories(histories, features.max_history))  # fmt: skip
    hist_ids = ctx["history"]
    with torch.inference_mode():
        emb = model.item_emb(hist_ids)
        fused = model._extract(emb, hist_ids > 0)
        loop = model._extract_loop(emb, hist_ids > 0)
    torch.testing.assert_close(fused, loop, rtol=0, atol=1e-12)
    assert torch.equal(fused[hist_ids == 0], torch.zeros_like(fused[hist_ids == 0]))


def test_dien_extractor_takes_the_loop_for_a_mask_with_holes(features) -> None:
    model = _dien(features)
    hist_ids = torch.tensor([[0, 3, 0, 5, 6]])  # not left-padded: the loop's semantics
    with torch.inference_mode():
        emb = model.item_emb(hist_ids)
        assert torch.equal(
            model._extract(emb, hist_ids > 0), model._extract_loop(emb, hist_ids > 0)
        )


def test_dien_serving_scores_equal_the_reference_after_float32_rounding(features, context) -> None:
    # what the stage replicas compute (inference mode: fused GRU) against what training,
    # the simulation and run_chain compute (the loop), as the cascade compares them
    model = _dien(features)
    items = torch.randint(1, 31, (len(context["history"]), 9))
    with torch.no_grad():
        reference = model(context, items).float()
    with torch.inference_mode():
        served = model(context, items).float()
    assert torch.equal(served, reference)


def test_dien_evolving_layer_without_autograd_gives_the_trained_floats(features) -> None:
    # serving and the simulation run the AUGRU with fewer ops; training keeps the
    # reference (its gradients depend on the op order); the forward floats are the same
    model = _dien(features)
    torch.manual_seed(1)
    g = model.config.gru_hidden
    states_x = torch.randn(3, 6, 3 * g, dtype=torch.float64)
    att = torch.softmax(torch.randn(3, 5, 6, dtype=torch.float64), dim=-1)
    with torch.no_grad():
        fast = model._evolve(states_x, att, 1)
        reference = model._evolve_reference(states_x, att, 1)
    assert torch.equal(fast, reference)
    with torch.inference_mode():  # serving: the loop as TorchScript, the same floats
        for start in (0, 1, 4, 6):  # past the profiling runs; 6: no step at all
            served = model._evolve(states_x, att, start)
            assert torch.equal(served, dien._augru(states_x, att, model.aug_h.weight, start, g))
        assert torch.equal(model._evolve(states_x, att, 1), reference)
    assert dien._AUGRU.scripted is True
