"""Shared test fixtures: the project root on sys.path, the ``../shared`` folder, and small
synthetic data, checkpoints and runs that several test files use."""

import os
import shutil
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


# ------------------------------------------------------ small data, models and runs
@pytest.fixture(scope="session")
def seven_set(tmp_path_factory):
    """Two 4-frame sequences of one room (7-Scenes layout): room0000/seq-01, seq-02, and
    ``list.txt`` naming both. Read only."""
    from datasets.synthetic.writer import generate

    root = tmp_path_factory.mktemp("seven")
    generate(root, "7scenes", scenes=1, frames=4, height=120, width=160, seed=6, workers=1)
    shutil.copytree(root / "room0000" / "seq-01", root / "room0000" / "seq-02")
    (root / "list.txt").write_text("room0000/seq-01\nroom0000/seq-02\n")
    return root


@pytest.fixture(scope="session")
def ckpt(tmp_path_factory):
    """A random ResNet-18 / 8-plane model saved as training saves it (with its config)."""
    from models.depthnet import DepthNetHybrid
    from utils.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "trained_r18.ckpt"
    model = DepthNetHybrid(ndepths=8, depth_min=0.1, depth_max=10.0, resnet=18)
    save_checkpoint(str(path), model, config={
        "resnet": 18, "ndepths": 8, "depth_min": 0.1, "depth_max": 10.0,
        "IF_EST_transformer": True, "lr": 1e-3})
    return str(path)


@pytest.fixture(scope="session")
def estm_run(seven_set, ckpt, tmp_path_factory):
    """The finished ESTM evaluation (no metrics) of ``ckpt`` on ``seven_set``. Read only:
    tests change a copy (``tests.helpers.copy_run``)."""
    import eval_hybrid_seq
    from tests.helpers import estm_argv

    evalpath = tmp_path_factory.mktemp("estm")
    eval_hybrid_seq.main(estm_argv(seven_set, ckpt, evalpath, "--metrics", "False"))
    return evalpath


@pytest.fixture(scope="session")
def train_set(tmp_path_factory):
    """``tests.helpers.make_train_scenes``: one 22-frame training scene, one test scene."""
    from tests.helpers import make_train_scenes

    return make_train_scenes(tmp_path_factory.mktemp("train_set"))
