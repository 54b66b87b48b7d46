"""The scenes of an evaluation: which ones (split lists), where their outputs go, their frames."""

from __future__ import annotations

from pathlib import Path

from datasets.io import listed_dirs
from datasets.scannet import ScanNetSequence
from datasets.sequence import PosedSequence
from datasets.seven_scenes import TEST_LIST as SEVEN_SCENES_TEST_LIST
from datasets.seven_scenes import SevenScenesSequence, is_sequence_dir, list_sequences

ROOT = Path(__file__).resolve().parents[1]
SCANNET_TEST_LIST = ROOT / "data" / "scannet_split" / "test_split.txt"
EVAL_DATASETS = ("scannet", "7scenes", "synthetic")


def effective_intrinsics(eval_dataset: str, intrinsics: str) -> str:
    """Synthetic data ships exact per-scene intrinsics, which are always used."""
    return "scene" if eval_dataset == "synthetic" else intrinsics


def default_testlist(eval_dataset: str, datapath) -> Path:
    if eval_dataset == "scannet":
        return SCANNET_TEST_LIST
    if eval_dataset == "synthetic":
        return Path(datapath) / "splits" / "test_split.txt"
    if eval_dataset == "7scenes":
        return SEVEN_SCENES_TEST_LIST
    raise ValueError(f"--eval_dataset must be one of {EVAL_DATASETS}, got {eval_dataset!r}")


def list_scenes(eval_dataset: str, datapath, testlist=None) -> list[tuple[str, Path]]:
    """``(name, folder)`` of every scene/sequence to evaluate, in list order.

    ``name`` is the output sub-folder: the scene (ScanNet, synthetic) or ``scene/seq``
    (7-Scenes; for a single sequence folder given as ``datapath``, its parent's name and
    its own).
    """
    if eval_dataset not in EVAL_DATASETS:
        raise ValueError(f"--eval_dataset must be one of {EVAL_DATASETS}, got {eval_dataset!r}")
    if not datapath:
        raise ValueError("--datapath is required (the root of the test scans)")
    datapath = Path(datapath)
    listed = testlist or default_testlist(eval_dataset, datapath)
    if eval_dataset == "7scenes":
        if is_sequence_dir(datapath):
            # resolved: "." or "seq/.." have no name of their own
            resolved = datapath.resolve()
            return [(f"{resolved.parent.name}/{resolved.name}", datapath)]
        return [(p.relative_to(datapath).as_posix(), p) for p in list_sequences(datapath, listed)]
    return [(p.relative_to(datapath).as_posix(), p) for p in listed_dirs(datapath, listed)]


def scene_dirs(run_dir: Path, scenes: list) -> dict:
    """``{name: output folder}``, each strictly inside ``run_dir`` and none inside another.

    A scene's folder is deleted when its evaluation restarts, so a name like ``.``,
    ``..``, ``a/../b`` or one scene nested in another would let one scene delete others'
    results (or the run's own files).

    Raises:
        ValueError: naming the offending scene name(s).
    """
    root = Path(run_dir).resolve()
    dirs = {}
    for name, _ in scenes:
        parts = Path(name).parts
        target = (root / name).resolve()
        if (not name or Path(name).is_absolute() or any(p in (".", "..") for p in parts)
                or root not in target.parents):
            raise ValueError(f"scene name {name!r} does not resolve to a folder strictly inside "
                             f"{root} (check --datapath and the split file's lines)")
        if name in dirs:
            raise ValueError(f"scene {name!r} is listed twice (check the split file)")
        dirs[name] = target
    for name, target in dirs.items():
        for other, other_dir in dirs.items():
            if other != name and target in other_dir.parents:
                raise ValueError(f"scene {other!r} lies inside scene {name!r}: their outputs "
                                 f"would overlap (check the split file)")
    return dirs


def open_sequence(eval_dataset: str, folder, height: int, width: int, frame_interval: int,
                  intrinsics: str, depth_min: float, depth_max: float) -> PosedSequence:
    """The evaluation frames of one scene; ground truth is valid in ``[depth_min, depth_max]``."""
    cls = SevenScenesSequence if eval_dataset == "7scenes" else ScanNetSequence
    return cls(folder, height=height, width=width, frame_interval=frame_interval,
               depth_min=depth_min, depth_max=depth_max,
               intrinsics=effective_intrinsics(eval_dataset, intrinsics))
