"""Inference-only copies of the model: batch norm folded into convolutions, optional compile.

Only for evaluation. The training model, its ``state_dict`` and checkpoint loading are
never changed: :func:`prepare_for_inference` returns a new module built from a loaded one.
"""

import copy
import logging

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from models.cuda_graphs import graph_inference

log = logging.getLogger(__name__)

_CONV_BN = ((nn.Conv2d, nn.BatchNorm2d), (nn.Conv3d, nn.BatchNorm3d))
# torchvision ResNet modules call bnK(convK(x)) in their forward (ResNet: bn1(conv1)).
_RESNET_TYPES = (ResNet, BasicBlock, Bottleneck)
_RESNET_PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (any(isinstance(conv, c) and type(bn) is b for c, b in _CONV_BN)
            and bn.track_running_stats and bn.running_mean is not None
            and conv.out_channels == bn.num_features)


@torch.no_grad()
def fold_conv_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A copy of ``conv`` computing ``bn(conv(x))`` with ``bn``'s running statistics.

    ``w' = w * g / sqrt(var + eps)``, ``b' = beta + (b - mean) * g / sqrt(var + eps)``,
    computed in float64 and rounded once to the weights' dtype.
    """
    folded = copy.deepcopy(conv)
    weight = conv.weight.double()
    scale = bn.running_var.double().add(bn.eps).rsqrt()
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if conv.bias is not None:
        shift = shift + conv.bias.double() * scale
    shape = (-1,) + (1,) * (weight.dim() - 1)
    folded.weight = nn.Parameter((weight * scale.view(shape)).to(conv.weight.dtype),
                                 requires_grad=False)
    folded.bias = nn.Parameter(shift.to(conv.weight.dtype), requires_grad=False)
    return folded


def _fold_children(module: nn.Module) -> int:
    """Fold the conv -> BN pairs directly under ``module``; returns how many."""
    count = 0
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            if _foldable(module[i], module[i + 1]):
                module[i] = fold_conv_bn(module[i], module[i + 1])
                module[i + 1] = nn.Identity()
                count += 1
    elif isinstance(module, _RESNET_TYPES):
        for conv_name, bn_name in _RESNET_PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if conv is not None and bn is not None and _foldable(conv, bn):
                setattr(module, conv_name, fold_conv_bn(conv, bn))
                setattr(module, bn_name, nn.Identity())
                count += 1
    return count


def _refuse_training(self, mode: bool = True):
    if mode:
        raise RuntimeError("this is an inference copy with batch norm folded into the "
                           "convolutions; train the original model instead")
    return nn.Module.train(self, False)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every batch norm that directly follows a
    convolution folded into it (replaced by ``nn.Identity``, so module paths stay valid).

    Exact up to float rounding. Only the pairs the forward passes really chain are folded:
    consecutive ``(conv, bn)`` in an ``nn.Sequential`` (every block of this model) and
    ``convK``/``bnK`` of torchvision ResNets. The copy refuses ``train()``.
    """
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode (running statistics)")
    folded = copy.deepcopy(model)
    count = sum(_fold_children(m) for m in list(folded.modules()))
    folded.train = _refuse_training.__get__(folded)
    folded.folded_batchnorms = count
    log.debug("folded %d batch norms into their convolutions", count)
    return folded


def prepare_for_inference(model: nn.Module, fold_bn: bool = True, compile: bool = False,
                          compile_backend: str = "inductor", cuda_graphs: bool = False
                          ) -> nn.Module:
    """The model to run evaluation with: eval mode, optionally BN-folded, with the layers
    that compute the same numbers with less work
    (:meth:`models.depthnet.DepthNetHybrid.use_fast_layers`), optionally compiled.

    Always a copy: ``model`` (its mode, its state_dict, its checkpoints) is left as it was. ``compile`` wraps the copy's parts in ``torch.compile``
    (:meth:`models.depthnet.DepthNetHybrid.compile_parts`).
    ``cuda_graphs`` replays the per-frame features and the window decode from CUDA graphs
    (models/cuda_graphs.py; a CUDA model only).
    """
    model = copy.deepcopy(model).eval()
    if fold_bn:
        model = fold_batchnorm(model)
    if hasattr(model, "use_fast_layers"):
        model.use_fast_layers()
    if compile:
        model.compile_parts(compile_backend)
    if cuda_graphs:
        model = graph_inference(model)
    return model
