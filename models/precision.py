"""Mixed-precision policy of ESTDepth: which parts may run in reduced precision.

The model is run under ``torch.autocast`` (``--amp bf16|fp16``); autocast lowers
convolutions and matrix products. Inside, the model calls :func:`run` for every region
below: a region marked fp32 for the active autocast dtype runs with autocast off on
float32 inputs. In float32 (no autocast) every region is the plain call, so the policy
changes no float32 number.

=========================================  ==========  ==========  =============================
region (``run(name, ...)``)                fp16        bf16        why
=========================================  ==========  ==========  =============================
``matching`` matching feature net          **fp32**    **fp32**    reduced features move the
``context``  ResNet context encoder        reduced     **fp32**    plane-sweep match: depths
``cost_fusion`` ``pre0``-``pre2``          reduced     **fp32**    by up to 2.5 m (bf16) or
``cost_filter`` ``dres0``, ``dres1``       reduced     **fp32**    0.2 m (fp16), see below
context decoder, ``dres2``, key, value,    reduced     reduced     measured harmless
stereo heads' 3x3x3 block, EST ConvGRU
convolutions, refinement decoder
``logits`` last 1x1x1 conv of each         fp32        fp32        1 channel: cheap; logits feed
stereo head; ``disparity`` final 3x3                               a softmax over planes / a
conv + sigmoid of scales 0 and 1                                   sigmoid scaled to metres
``depth_softmax`` softmax, soft-argmin     fp32        fp32        depth resolution
``attention`` EST key products, softmax,   fp32        fp32        softmax over views
weighted mean over views
``loss`` the multi-scale L1 loss           fp32        fp32        reductions over many pixels
grids, poses, sampling coordinates,        fp32        fp32        sub-pixel accuracy
``grid_sample`` (utils.geometry's
``full_precision``, ``sample``)
=========================================  ==========  ==========  =============================

Outputs (depths, probabilities, the EST memory) are always float32.

Measured on the official fixture (tests/test_precision.py, ``python -m dev.precision_error``),
ESTM + Joint windows, |depth(bf16) - depth(fp32)| at scale 0 (mean / 99th pct / max, m):
plain autocast 0.175 / 0.78 / 2.49; this policy 0.019 / 0.079 / 0.18. Running groups of
layers in fp32 showed that no single group is enough for bf16: the matching net alone gets
the mean to 0.055 m, adding the ResNet 0.036, adding ``pre``/``dres`` 0.018. fp16 (11-bit
mantissa), emulated on the CPU by rounding every convolution's weights, inputs and outputs
and every norm/activation output to fp16 (the same emulation of bf16 reproduces the
measured bf16 figures within 2%): all reduced 0.019 / 0.086 / 0.21; matching net in fp32
(this policy) 0.0059 / 0.026 / 0.073; also the ResNet 0.0038 / 0.016 / 0.038. On an NVIDIA
H200 (tests/test_cuda.py, real fp16/bf16 kernels): fp16 0.0060 / 0.026 / 0.067, bf16
0.019 / 0.078 / 0.17.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Optional

import torch

# --amp value -> autocast dtype (None: float32, autocast off).
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# The official (NVIDIA apex) --opt_level -> the --amp it means here. apex O2/O3 also cast
# the weights to fp16; autocast keeps float32 master weights.
APEX_OPT_LEVELS = {"O0": "none", "O1": "fp16", "O2": "fp16", "O3": "fp16"}

FP32 = "fp32"
REDUCED = "reduced"
ALWAYS_FP32 = {torch.float16: FP32, torch.bfloat16: FP32}
BF16_FP32 = {torch.float16: REDUCED, torch.bfloat16: FP32}
# region -> {autocast dtype: FP32 or REDUCED}; the table in the module docstring.
POLICY = {
    "matching": ALWAYS_FP32,
    "context": BF16_FP32,
    "cost_fusion": BF16_FP32,
    "cost_filter": BF16_FP32,
    "logits": ALWAYS_FP32,
    "disparity": ALWAYS_FP32,
    "depth_softmax": ALWAYS_FP32,
    "attention": ALWAYS_FP32,
    "loss": ALWAYS_FP32,
}


def amp_dtype(name: str) -> Optional[torch.dtype]:
    """``none``/``bf16``/``fp16`` -> None / torch dtype; anything else is an error."""
    if name not in AMP_DTYPES:
        raise ValueError(f"--amp must be one of {sorted(AMP_DTYPES)}, got {name!r}")
    return AMP_DTYPES[name]


def training_amp_dtype(amp: str, opt_level: str = "O0") -> Optional[torch.dtype]:
    """The training autocast dtype of ``--amp`` and the official ``--opt_level``.

    A level other than O0 means fp16 (:data:`APEX_OPT_LEVELS`); ``--amp`` may repeat it
    but not contradict it.
    """
    dtype = amp_dtype(amp)
    if opt_level not in APEX_OPT_LEVELS:
        raise ValueError(f"--opt_level must be one of {', '.join(APEX_OPT_LEVELS)}, got "
                         f"{opt_level!r}")
    level_dtype = AMP_DTYPES[APEX_OPT_LEVELS[opt_level]]
    if level_dtype is None:
        return dtype
    if dtype not in (None, level_dtype):
        raise ValueError(f"--opt_level {opt_level} ({APEX_OPT_LEVELS[opt_level]}) "
                         f"contradicts --amp {amp}")
    return level_dtype


def autocast(device_type: str, dtype: Optional[torch.dtype]):
    """``torch.autocast`` for ``dtype``, or a no-op context for float32 (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type, dtype=dtype)


def active_dtype(device_type: str) -> Optional[torch.dtype]:
    """The autocast dtype in effect on ``device_type``, or None when autocast is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def region_dtype(region: str, device_type: str) -> Optional[torch.dtype]:
    """The dtype the policy runs ``region`` in now: None (as autocast decides) or float32."""
    dtype = active_dtype(device_type)
    if dtype is None or POLICY[region].get(dtype, FP32) == REDUCED:
        return None
    return torch.float32


def _to_float32(x):
    if torch.is_tensor(x) and x.is_floating_point():
        return x.float()
    if isinstance(x, (list, tuple)):
        return type(x)(_to_float32(v) for v in x)
    return x


def run(region: str, fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` in the precision the policy gives ``region``.

    The device is that of the first tensor argument. In an fp32 region, autocast is off
    and floating tensors (also inside lists) are cast to float32.
    """
    first = next(a for a in (*args, *kwargs.values())
                 if torch.is_tensor(a) or (isinstance(a, (list, tuple)) and a))
    device_type = (first if torch.is_tensor(first) else first[0]).device.type
    if region_dtype(region, device_type) is None:
        return fn(*args, **kwargs)
    with torch.autocast(device_type, enabled=False):
        return fn(*_to_float32(args), **{k: _to_float32(v) for k, v in kwargs.items()})


def configure_tf32(allow: bool) -> None:
    """TF32 for cuDNN convolutions and CUDA matmuls (Ampere and later GPUs).

    PyTorch enables it for cuDNN convolutions by default, which rounds their inputs to a
    10-bit mantissa; evaluation turns it off unless ``--allow_tf32 True``.
    """
    torch.backends.cudnn.allow_tf32 = allow
    torch.backends.cuda.matmul.allow_tf32 = allow
