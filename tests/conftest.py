"""Shared test fixtures: the project root on sys.path and the ``../shared`` folder."""

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def shared_path(*parts: str) -> Path:
    """A path under ``../shared`` (or ``$ESTDEPTH_SHARED``); skips the test when absent."""
    base = Path(os.environ.get("ESTDEPTH_SHARED", ROOT.parent / "shared"))
    path = base.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not found: the shared reference data (../shared) is absent")
    return path


@pytest.fixture(scope="session")
def reference():
    """The official-output fixture ``estdepth_r18_128x160.pt`` (float32 weights)."""
    ref = torch.load(shared_path("reference", "estdepth_r18_128x160.pt"), weights_only=False)
    ref["weights"] = {k: v.float() if v.is_floating_point() else v
                      for k, v in ref["weights"].items()}
    return ref


@pytest.fixture(scope="session")
def redkitchen():
    """The folder of 50 real 7-Scenes frames."""
    return shared_path("data", "7scenes", "redkitchen", "seq-sample")
