"""evaluation/run.py and its run folder (scenes, run_files): what an evaluation refuses,
keeps and recomputes. Nothing of another run is lost, nothing is silently wrong.

The data (``seven_set``: room0000/seq-01 and seq-02), the checkpoint (``ckpt``) and a
finished ESTM run (``estm_run``) are conftest fixtures.
"""

from __future__ import annotations

import fcntl
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import eval_hybrid_seq
from datasets.io import DataError, listed_dirs
from evaluation import run as eval_run
from evaluation import run_files, run_metrics
from evaluation import scenes as eval_scenes
from tests.helpers import copy_run, estm_argv, folder_files
from utils import io as io_utils
from utils.config import ConfigError, load_config


# ------------------------------------------------------------------ scene folders
def test_sequence_given_as_dot_keeps_its_siblings_results(seven_set, ckpt, tmp_path,
                                                          monkeypatch):
    evalpath = tmp_path / "out"
    room = seven_set / "room0000"
    eval_hybrid_seq.main(estm_argv(seven_set, ckpt, evalpath, "--metrics", "False",
                                   "--datapath", str(room / "seq-02")))
    sibling = evalpath / "estm" / "room0000" / "seq-02"
    before = folder_files(sibling)
    assert (sibling / run_files.MARKER).is_file()

    monkeypatch.chdir(room / "seq-01")
    result = eval_hybrid_seq.main(estm_argv(seven_set, ckpt, evalpath, "--metrics", "False",
                                            "--datapath", "."))
    assert list(result["scenes"]) == ["room0000/seq-01"]
    assert folder_files(sibling) == before


@pytest.mark.parametrize("names", [["."], [".."], ["a/../b"], ["/abs"], ["a", "a/b"],
                                   ["a", "a"]])
def test_scene_names_must_be_distinct_folders_strictly_inside_the_run(tmp_path, names):
    with pytest.raises(ValueError, match="scene"):
        eval_scenes.scene_dirs(tmp_path / "joint", [(n, tmp_path) for n in names])


def test_split_line_dot_is_refused_before_anything_is_deleted(seven_set, ckpt, estm_run,
                                                              tmp_path):
    run = copy_run(estm_run, tmp_path)
    before = folder_files(run)
    listing = tmp_path / "bad.txt"
    listing.write_text(".\n")
    with pytest.raises(DataError, match="bad.txt"):
        listed_dirs(seven_set, listing)
    with pytest.raises(DataError, match="below the data root"):
        eval_hybrid_seq.main(estm_argv(seven_set, ckpt, run, "--testlist", str(listing),
                                       "--datapath", str(seven_set / "room0000")))
    assert folder_files(run) == before


def test_a_scene_folder_holding_other_results_is_never_deleted(tmp_path):
    scene = tmp_path / "scene"
    (scene / "inner").mkdir(parents=True)
    (scene / "inner" / run_files.MARKER).write_text("{}")
    with pytest.raises(RuntimeError, match="refusing to delete"):
        run_files.clear_attempt(scene)
    assert (scene / "inner" / run_files.MARKER).is_file()


# ------------------------------------------------------------------ concurrent runs
def test_a_locked_output_folder_is_refused_naming_the_other_run(seven_set, ckpt, tmp_path):
    """The lock file names the holder while held and goes when released."""
    run_dir = tmp_path / "estm"
    run_dir.mkdir()
    other = {"pid": 4242, "host": "node7", "what": "estm evaluation of other.ckpt"}
    with open(run_dir / io_utils.LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps(other))
        held.flush()
        with pytest.raises(RuntimeError, match="in use by another run.*4242.*other.ckpt"):
            eval_hybrid_seq.main(estm_argv(seven_set, ckpt, tmp_path))
    assert not any(run_dir.rglob(run_files.MARKER))
    # released, the folder can be taken
    with io_utils.folder_lock(str(run_dir), "mine"):
        assert json.loads((run_dir / io_utils.LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(io_utils.FolderLockedError, match="mine"):
            with io_utils.folder_lock(str(run_dir)):
                pass
    assert not (run_dir / io_utils.LOCK_FILE).exists()


# ------------------------------------------------------------ resuming a finished run
def test_truncated_outputs_of_a_done_scene_are_detected_and_recomputed(seven_set, ckpt,
                                                                       estm_run, tmp_path):
    run = copy_run(estm_run, tmp_path)
    scene = run / "estm" / "room0000" / "seq-01"
    reference = folder_files(scene)
    npy = scene / "refined_depth" / "frame-000001.color.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.raises(run_metrics.IncompleteRunError, match="truncated"):
        run_metrics.main(["--evalpath", str(run)])
    result = eval_hybrid_seq.main(estm_argv(seven_set, ckpt, run))
    assert result["scenes"]["room0000/seq-01"]["status"] == "evaluated"
    assert result["scenes"]["room0000/seq-02"]["status"] == "skipped"
    assert folder_files(scene) == reference


def test_batched_sequences_write_the_one_at_a_time_files_and_resume_them(seven_set, ckpt,
                                                                          estm_run, tmp_path):
    """--batch_sequences 2 (both sequences in one batch): the same files, markers and
    configuration hash as one at a time (depths within rounding), so a run resumes across
    batch sizes."""
    result = eval_hybrid_seq.main(estm_argv(seven_set, ckpt, tmp_path, "--metrics", "False",
                                            "--batch_sequences", "2"))
    alone, batched = folder_files(estm_run / "estm"), folder_files(tmp_path / "estm")
    assert alone.keys() == batched.keys()
    markers = [rel for rel in alone if rel.endswith(run_files.MARKER)]
    assert len(markers) == 2 and all(alone[rel] == batched[rel] for rel in markers)
    depths = [rel for rel in alone if rel.endswith(".npy")]
    assert len(depths) == 8
    for rel in depths:
        a, b = (np.load(root / "estm" / rel) for root in (estm_run, tmp_path))
        assert np.abs(a - b).max() <= 1e-5, rel
    resumed = eval_hybrid_seq.main(estm_argv(seven_set, ckpt, copy_run(estm_run, tmp_path),
                                             "--metrics", "False", "--batch_sequences", "2"))
    assert resumed["config_hash"] == result["config_hash"]
    assert {s["status"] for s in resumed["scenes"].values()} == {"skipped"}


# ------------------------------------------------------------ refused before the work
def test_a_scene_too_short_for_one_window_is_an_error_and_not_marked(seven_set, ckpt,
                                                                     tmp_path):
    with pytest.raises(eval_run.NothingPredictedError, match="lower --frame_interval"):
        eval_hybrid_seq.main(estm_argv(seven_set, ckpt, tmp_path, "--frame_interval", "10"))
    assert not list(tmp_path.rglob(run_files.MARKER))
    assert not list(tmp_path.rglob("*.npy"))


def test_bad_options_are_refused_before_any_work(seven_set, ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(eval_run, "build_model", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(ValueError, match="--pred_resize"):
        eval_hybrid_seq.main(estm_argv(seven_set, ckpt, tmp_path, "--pred_resize", "cubic"))
    with pytest.raises(ValueError, match="min_depth_eval"):
        eval_hybrid_seq.main(estm_argv(seven_set, ckpt, tmp_path, "--min_depth_eval", "6",
                                       "--max_depth_eval", "5"))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="--depth_min \\(7.0\\) must be below --depth_max"):
        load_config("train", ["--depth_min", "7", "--depth_max", "6"])
    for bad in (["--height", "100"], ["--resnet", "20"], ["--lr", "0"]):
        with pytest.raises(ConfigError, match=bad[0]):
            load_config("train", bad)


def _sized_checkpoint(tmp_path, height: int, width: int) -> str:
    from models.depthnet import DepthNetHybrid
    from utils.checkpoint import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path / "sized.ckpt"
    save_checkpoint(str(path), DepthNetHybrid(ndepths=4, resnet=18), config={
        "resnet": 18, "ndepths": 4, "depth_min": 0.1, "depth_max": 10.0,
        "IF_EST_transformer": True, "height": height, "width": width})
    return str(path)


@pytest.mark.slow
def test_evaluation_runs_at_the_size_the_checkpoint_was_trained_at(seven_set, tmp_path, capfd):
    ckpt = _sized_checkpoint(tmp_path, 128, 160)
    argv = ["--device", "cpu", "--eval_dataset", "7scenes", "--datapath", str(seven_set),
            "--testlist", str(seven_set / "list.txt"), "--intrinsics", "dataset",
            "--frame_interval", "1", "--loadckpt", ckpt, "--save_images", "False",
            "--metrics", "False"]
    run = eval_hybrid_seq.main(argv + ["--evalpath", str(tmp_path / "a")])
    hashed = json.loads((Path(run["run_dir"]) / "run.json").read_text())["hashed"]
    assert (hashed["height"], hashed["width"], hashed["ndepths"]) == (128, 160, 4)
    capfd.readouterr()
    run = eval_hybrid_seq.main(argv + ["--evalpath", str(tmp_path / "b"), "--width", "128"])
    hashed = json.loads((Path(run["run_dir"]) / "run.json").read_text())["hashed"]
    assert hashed["width"] == 128  # a size given on purpose is kept, with a warning
    assert "differs from the 160" in capfd.readouterr().err
