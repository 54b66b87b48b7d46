"""The hybrid decoder (models/hybrid_decoder.py): the inference copies' key/value head."""

import pytest
import torch

from models import DepthNetHybrid
from models.inference import fold_batchnorm, prepare_for_inference


def _model(fold: bool) -> DepthNetHybrid:
    """Eval mode, batch norms with non-trivial running statistics, optionally folded."""
    torch.manual_seed(0)
    model = DepthNetHybrid(ndepths=8, depth_min=0.5, depth_max=5.0, resnet=18)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    return fold_batchnorm(model) if fold else model


def _volumes(batch: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 32, 8, 16, 20, generator=g), torch.randn(batch, 8, 16, 20,
                                                                       generator=g)


@pytest.mark.parametrize("fold", [False, True], ids=["batch-norm", "folded"])
@pytest.mark.parametrize("batch", [1, 3])
def test_key_value_head_equals_the_official_layers(fold, batch):
    decoder = _model(fold).CostRegNet
    cost, context = _volumes(batch)
    with torch.no_grad():
        want = decoder.key_value(cost, context)
        decoder.use_key_value_head()
        got = decoder.key_value(cost, context)
    for g, w in zip(got, want):
        assert g.shape == w.shape == (batch, 16, 8, 16, 20)
        assert (g - w).abs().max().item() <= 1e-5 * w.abs().max().item()


def test_inference_copies_use_the_head_and_the_model_stays_official(monkeypatch):
    from models.hybrid_decoder import KeyValueHead

    calls = []
    real = KeyValueHead.forward
    monkeypatch.setattr(KeyValueHead, "forward",
                        lambda self, *a: calls.append("head") or real(self, *a))
    model = _model(fold=False)
    keys = set(model.state_dict())
    cost, context = _volumes(1)
    for fold_bn in (True, False):
        copy = prepare_for_inference(model, fold_bn=fold_bn)
        with torch.no_grad():
            copy.CostRegNet.key_value(cost, context)
    assert calls == ["head", "head"]
    copy.train()  # the unfolded copy may train: with the official layers
    copy.CostRegNet.key_value(cost, context)
    assert calls == ["head", "head"]
    # The model given is left as it was: no head, official state_dict, official order.
    assert model.CostRegNet.key_value_head is None and model.project_pair_conv is False
    assert set(model.state_dict()) == keys
