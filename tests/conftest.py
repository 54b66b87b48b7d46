"""Shared test fixtures: the project root on sys.path and the ``../shared`` folder."""

import os
import sys
from pathlib import Path

import pytest
import torch

from utils.io import shared_dir

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# CI sets this: there a missing shared file fails the run instead of skipping the parity
# and real-data tests, so a green CI always means they ran.
REQUIRE_SHARED = os.environ.get("ESTDEPTH_REQUIRE_SHARED", "") not in ("", "0")


def shared_base() -> Path:
    """``$ESTDEPTH_SHARED``, or the ``shared`` folder beside the project."""
    return shared_dir()


def missing_shared(path: Path) -> None:
    """Skip the test for a user without ``../shared``; fail it under ESTDEPTH_REQUIRE_SHARED."""
    message = f"{path} not found: the shared reference data (../shared) is absent"
    if REQUIRE_SHARED:
        pytest.fail(message + " and ESTDEPTH_REQUIRE_SHARED is set (as in CI)", pytrace=False)
    pytest.skip(message)


def shared_available(path: Path) -> bool:
    """Whether ``path`` exists, for tests that run either way; False fails under REQUIRE_SHARED."""
    if REQUIRE_SHARED and not path.exists():
        pytest.fail(f"{path} not found and ESTDEPTH_REQUIRE_SHARED is set (as in CI)",
                    pytrace=False)
    return path.exists()


def shared_path(*parts: str) -> Path:
    """A path under :func:`shared_base`; skips (or fails, see REQUIRE_SHARED) when absent."""
    path = shared_base().joinpath(*parts)
    if not path.exists():
        missing_shared(path)
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
