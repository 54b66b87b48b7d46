"""The hybrid decoder (models/hybrid_decoder.py): dres2 -> key, value without 33-channel
convolutions (the model's fast layers) equals the official layers, in inference and
training."""

import pytest
import torch

from models.inference import prepare_for_inference
from tests.helpers import small_eval_model


def _volumes(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 32, 8, 16, 20, generator=g), torch.randn(batch, 8, 16, 20,
                                                                       generator=g)


def _close(got, want, rel=1e-5):
    assert got.shape == want.shape
    assert (got - want).abs().max().item() <= rel * want.abs().max().item()


@pytest.mark.parametrize("fold", [False, True], ids=["batch-norm", "folded"])
@pytest.mark.parametrize("batch", [1, 3])
def test_split_key_value_equals_the_official_layers(fold, batch):
    decoder = small_eval_model(fold).CostRegNet
    cost, context = _volumes(batch)
    with torch.no_grad():
        want = decoder.key_value(cost, context)
        decoder.split_key_value = True
        got = decoder.key_value(cost, context)
    for g, w in zip(got, want):
        assert w.shape == (batch, 16, 8, 16, 20)
        _close(g, w)


def test_split_key_value_trains_as_the_official_layers():
    """Batch statistics, running statistics and gradients (of the inputs and of every
    parameter involved) agree."""
    runs = []
    for split in (False, True):
        decoder = small_eval_model().CostRegNet.train()
        decoder.split_key_value = split
        cost, context = (v.requires_grad_() for v in _volumes(3))
        key, value = decoder.key_value(cost, context)
        (key.square().mean() + value.mean()).backward()
        params = [decoder.dres2[0][0].weight, decoder.key_layer[0][0].weight,
                  decoder.value_layer[0][0].weight, decoder.dres2[0][1].weight]
        runs.append(([key, value], [cost.grad, context.grad] + [p.grad for p in params],
                     decoder.dres2[0][1].running_var.clone()))
    (out0, grads0, var0), (out1, grads1, var1) = runs
    for g, w in zip(out1, out0):
        _close(g.detach(), w.detach())
    torch.testing.assert_close(var1, var0, atol=1e-6, rtol=1e-5)
    for g, w in zip(grads1, grads0):
        _close(g, w, rel=1e-4)


def test_fast_layers_switch_the_split_and_the_model_given_stays_official():
    model = small_eval_model()
    keys = set(model.state_dict())
    copy = prepare_for_inference(model, fold_bn=False)
    assert copy.fast_layers and copy.CostRegNet.split_key_value
    assert not model.fast_layers and not model.CostRegNet.split_key_value
    assert set(model.state_dict()) == set(copy.state_dict()) == keys
    model.use_fast_layers()
    assert model.CostRegNet.split_key_value
    model.use_fast_layers(False)
    assert not model.fast_layers and not model.CostRegNet.split_key_value
