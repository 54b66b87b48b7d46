"""ResNet context encoder (torchvision), five feature maps for the hybrid decoder."""

import logging
import os

import torch
import torchvision
from torch import nn

from utils.options import RESNET_DEPTHS

log = logging.getLogger(__name__)

RESNETS = {depth: getattr(torchvision.models, f"resnet{depth}") for depth in RESNET_DEPTHS}


class ResnetEncoder(nn.Module):
    """Image ``[N, 3, H, W]`` -> features at 1/2, 1/4, 1/8, 1/16, 1/32 (after ReLU).

    Args:
        num_layers: 18, 34, 50, 101 or 152.
        pretrained_path: optional local file with torchvision ImageNet weights for this
            ResNet (e.g. ``resnet50-0676ba61.pth``); nothing is ever downloaded.
    """

    def __init__(self, num_layers: int, pretrained_path: str | None = None):
        super().__init__()
        if num_layers not in RESNETS:
            raise ValueError(f"resnet must be one of {sorted(RESNETS)}, got {num_layers}")
        self.encoder = RESNETS[num_layers](weights=None)
        # The classifier is never used; it stays for checkpoint compatibility, frozen so
        # that DDP does not wait for its gradients.
        self.encoder.fc.requires_grad_(False)
        expansion = 4 if num_layers > 34 else 1
        self.num_ch_enc = [64, 64 * expansion, 128 * expansion, 256 * expansion, 512 * expansion]
        if pretrained_path:
            load_imagenet_weights(self.encoder, pretrained_path)

    def forward(self, img_n3hw: torch.Tensor) -> list[torch.Tensor]:
        enc = self.encoder
        f0 = enc.relu(enc.bn1(enc.conv1(img_n3hw)))
        f1 = enc.layer1(enc.maxpool(f0))
        f2 = enc.layer2(f1)
        f3 = enc.layer3(f2)
        return [f0, f1, f2, f3, enc.layer4(f3)]


def load_imagenet_weights(resnet: nn.Module, path: str) -> None:
    """Load a torchvision ResNet state dict from a local file, strictly."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"ImageNet weights file {path!r} does not exist. Download the torchvision "
            "checkpoint for this ResNet on a machine with internet access and pass its path "
            "with --pretrained_resnet, or leave the option empty for random initialisation.")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("state_dict", state)
    try:
        resnet.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise RuntimeError(f"{path}: not the ImageNet weights of this ResNet: {err}") from None
    log.info("ResNet context encoder initialised from ImageNet weights in %s", path)
