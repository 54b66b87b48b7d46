"""The one way to build the model from options: ``DepthNetHybrid.from_options(opts)``.

Every entry point (training, evaluation, prediction, the demo, the benchmark) and the
tests that build a model from a configuration go through :func:`from_options`; loading a
checkpoint of ours first takes the model options it records (:func:`checkpoint_options`).
This module does not import the model (``models.depthnet`` imports it), so the class to
build is an argument.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional

from torch import nn

from utils.checkpoint import load_model_state
from utils.options import ModelOptions

log = logging.getLogger("model")

# Model options a checkpoint of ours records (its "config"); official ones record none.
CHECKPOINT_MODEL_OPTIONS = ("resnet", "ndepths", "depth_min", "depth_max", "IF_EST_transformer")


def from_options(cls, opts: ModelOptions, state: Optional[dict] = None,
                 source: str = "checkpoint") -> nn.Module:
    """``cls`` (DepthNetHybrid) built from ``opts``; with ``state``, its weights loaded
    strictly (and then no ImageNet file is read: the state replaces those weights).

    Raises:
        utils.checkpoint.CheckpointError: ``state`` does not fit (named by ``source``).
    """
    model = cls(ndepths=opts.ndepths, depth_min=opts.depth_min, depth_max=opts.depth_max,
                resnet=opts.resnet, IF_EST_transformer=opts.IF_EST_transformer,
                pretrained_resnet=None if state is not None else opts.pretrained_resnet)
    if state is not None:
        load_model_state(model, state, source=source)
    return model


def checkpoint_options(opts: ModelOptions, ckpt: dict, given=frozenset(),
                       source: str = "the checkpoint") -> ModelOptions:
    """``opts`` with the model options the checkpoint was trained with, unless ``given``.

    An option left at its default takes the checkpoint's value (logged); one in ``given``
    (set on the command line or in ``--config``) must agree with it. Official checkpoints
    record no options, so ``opts`` (the official defaults) stay.

    Raises:
        ValueError: an explicitly given option conflicts with the checkpoint.
    """
    trained = ckpt.get("config") if isinstance(ckpt.get("config"), dict) else {}
    changes = {}
    for key in CHECKPOINT_MODEL_OPTIONS:
        if key not in trained:
            continue
        ours = getattr(opts, key)
        theirs = type(ours)(trained[key])
        if ours == theirs:
            continue
        if key in given:
            raise ValueError(f"--{key} {ours} conflicts with the {theirs} the checkpoint "
                             f"{source} was trained with (leave --{key} out to use the "
                             f"checkpoint's)")
        log.info("--%s %s from the checkpoint (default %s)", key, theirs, ours)
        changes[key] = theirs
    return dataclasses.replace(opts, **changes)
