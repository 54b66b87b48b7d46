"""Epipolar Spatio-Temporal (EST) transformer: attention over warped views + a ConvGRU cell."""

import torch
from torch import nn

from models import precision
from models.layers import Conv3d, GroupNorm


def attend(target_key: torch.Tensor, warped_keys: list, warped_values: list) -> torch.Tensor:
    """Attention over views: softmax of channel-summed key products, MEAN of weighted values.

    Args:
        target_key: ``[B, C, D, H, W]``.
        warped_keys, warped_values: lists of ``[B, C, D, H, W]`` (other views, same frustum).
    Returns:
        ``[B, C, D, H, W]``.
    """
    scores = torch.stack([(target_key * key).sum(dim=1, keepdim=True) for key in warped_keys],
                         dim=-1)  # [B, 1, D, H, W, N]
    weights = torch.softmax(scores, dim=-1)
    # The official takes the mean (not the sum) over views; the weights were trained so.
    return (torch.stack(warped_values, dim=-1) * weights).mean(dim=-1)


class EpipolarTransformer(nn.Module):
    """Fuse a target value volume with the attended values of other views (ConvGRU update)."""

    def __init__(self, input_channel: int = 16, output_channel: int = 16, kernel_size: int = 3):
        super().__init__()
        gru_in = input_channel + output_channel
        self.output_channel = output_channel
        self.gate_conv = Conv3d(gru_in, 2 * output_channel, kernel_size, padding=1)
        self.reset_gate_norm = GroupNorm(1, output_channel, 1e-5, True)
        self.update_gate_norm = GroupNorm(1, output_channel, 1e-5, True)
        self.output_conv = Conv3d(gru_in, output_channel, kernel_size, padding=1)
        self.output_norm = GroupNorm(1, output_channel, 1e-5, True)

    def forward(self, target_key, target_value, warped_keys, warped_values):
        """Returns the fused value ``u * h + (1 - u) * tanh(candidate)``, ``[B, C, D, H, W]``."""
        # Without another view the official cell starts from h = 0.
        h = (precision.run("attention", attend, target_key, warped_keys, warped_values)
             if warped_keys
             else torch.zeros_like(target_value))
        reset, update = self.gate_conv(torch.cat([target_value, h], dim=1)).chunk(2, dim=1)
        r = torch.sigmoid(self.reset_gate_norm(reset))
        u = torch.sigmoid(self.update_gate_norm(update))
        candidate = torch.tanh(self.output_norm(
            self.output_conv(torch.cat([target_value, r * h], dim=1))))
        return u * h + (1 - u) * candidate
