"""Issue 11: nothing lost, nothing silently wrong, and a first contact without friction.

One test (or more) per fault case of the issue, in its order; each failed before the fix.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import demo
import eval_hybrid_seq
from datasets.io import DataError, listed_dirs, read_color, read_depth, read_pose
from datasets.synthetic import cli as synthetic_cli
from datasets.synthetic.writer import generate
from models.depthnet import DepthNetHybrid
from utils import checkpoint as ckpt_io
from evaluation import run as eval_run
from evaluation import run_files, run_metrics
from evaluation import scenes as eval_scenes
from utils import io as io_utils
from utils.config import ConfigError, build_parser, load_config

ROOT = Path(__file__).resolve().parents[1]
NET = ["--height", "128", "--width", "160", "--device", "cpu", "--log_level", "WARNING"]
SMALL_MODEL = ["--resnet", "18", "--ndepths", "8", "--depth_min", "0.1", "--depth_max", "10"]


# ----------------------------------------------------------------------------- data
@pytest.fixture(scope="module")
def seven_set(tmp_path_factory):
    """Two 4-frame sequences of one room (7-Scenes layout): room0000/seq-01, seq-02."""
    root = tmp_path_factory.mktemp("seven")
    generate(root, "7scenes", scenes=1, frames=4, height=120, width=160, seed=6, workers=1)
    shutil.copytree(root / "room0000" / "seq-01", root / "room0000" / "seq-02")
    (root / "list.txt").write_text("room0000/seq-01\nroom0000/seq-02\n")
    return root


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A random ResNet-18 / 8-plane model saved as training saves it (with its config)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "trained_r18.ckpt"
    model = DepthNetHybrid(ndepths=8, depth_min=0.1, depth_max=10.0, resnet=18)
    ckpt_io.save_checkpoint(str(path), model, config={
        "resnet": 18, "ndepths": 8, "depth_min": 0.1, "depth_max": 10.0,
        "IF_EST_transformer": True, "lr": 1e-3})
    return str(path)


def _estm(seven_set, ckpt, evalpath, *extra, model=SMALL_MODEL):
    return [*NET, *model, "--eval_dataset", "7scenes", "--datapath", str(seven_set),
            "--testlist", str(seven_set / "list.txt"), "--intrinsics", "dataset",
            "--frame_interval", "1", "--loadckpt", ckpt, "--evalpath", str(evalpath),
            "--save_images", "False", *extra]


@pytest.fixture(scope="module")
def estm_run(seven_set, ckpt, tmp_path_factory):
    evalpath = tmp_path_factory.mktemp("estm")
    eval_hybrid_seq.main(_estm(seven_set, ckpt, evalpath, "--metrics", "False"))
    return evalpath


def _copy_run(estm_run, tmp_path) -> Path:
    shutil.copytree(estm_run, tmp_path / "run")
    return tmp_path / "run"


def _files(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------- 1. data loss
def test_sequence_given_as_dot_keeps_its_siblings_results(seven_set, ckpt, tmp_path,
                                                          monkeypatch):
    evalpath = tmp_path / "out"
    room = seven_set / "room0000"
    eval_hybrid_seq.main(_estm(seven_set, ckpt, evalpath, "--metrics", "False",
                               "--datapath", str(room / "seq-02")))
    sibling = evalpath / "estm" / "room0000" / "seq-02"
    before = _files(sibling)
    assert (sibling / run_files.MARKER).is_file()

    monkeypatch.chdir(room / "seq-01")
    result = eval_hybrid_seq.main(_estm(seven_set, ckpt, evalpath, "--metrics", "False",
                                        "--datapath", "."))
    assert list(result["scenes"]) == ["room0000/seq-01"]
    assert _files(sibling) == before


@pytest.mark.parametrize("names", [["."], [".."], ["a/../b"], ["/abs"], ["a", "a/b"],
                                   ["a", "a"]])
def test_scene_names_must_be_distinct_folders_strictly_inside_the_run(tmp_path, names):
    with pytest.raises(ValueError, match="scene"):
        eval_scenes.scene_dirs(tmp_path / "joint", [(n, tmp_path) for n in names])


def test_split_line_dot_is_refused_before_anything_is_deleted(seven_set, ckpt, estm_run,
                                                              tmp_path):
    run = _copy_run(estm_run, tmp_path)
    before = _files(run)
    listing = tmp_path / "bad.txt"
    listing.write_text(".\n")
    with pytest.raises(DataError, match="bad.txt"):
        listed_dirs(seven_set, listing)
    with pytest.raises(DataError, match="below the data root"):
        eval_hybrid_seq.main(_estm(seven_set, ckpt, run, "--testlist", str(listing),
                                   "--datapath", str(seven_set / "room0000")))
    assert _files(run) == before


def test_a_scene_folder_holding_other_results_is_never_deleted(tmp_path):
    scene = tmp_path / "scene"
    (scene / "inner").mkdir(parents=True)
    (scene / "inner" / run_files.MARKER).write_text("{}")
    with pytest.raises(RuntimeError, match="refusing to delete"):
        run_files.clear_attempt(scene)
    assert (scene / "inner" / run_files.MARKER).is_file()


# ----------------------------------------------------------------- 2. zero options
@pytest.mark.parametrize("section, option", [
    ("train", "save_freq"), ("train", "summary_freq"), ("train", "frame_interval"),
    ("train", "batch_size"), ("train", "epochs"), ("eval", "frame_interval"),
    ("eval", "memory_size"), ("demo", "frame_interval")])
def test_zero_frequencies_and_counts_are_refused_at_start_up(section, option):
    with pytest.raises(ConfigError, match=f"--{option}"):
        load_config(section, [f"--{option}", "0"])


# ------------------------------------------------------------ 3. concurrent runs
def test_a_locked_output_folder_is_refused_naming_the_other_run(seven_set, ckpt, tmp_path):
    run_dir = tmp_path / "estm"
    run_dir.mkdir()
    other = {"pid": 4242, "host": "node7", "what": "estm evaluation of other.ckpt"}
    with open(run_dir / io_utils.LOCK_FILE, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps(other))
        held.flush()
        with pytest.raises(RuntimeError, match="in use by another run.*4242.*other.ckpt"):
            eval_hybrid_seq.main(_estm(seven_set, ckpt, tmp_path))
    assert not any(run_dir.rglob(run_files.MARKER))
    # released, the folder can be taken; the lock file names the holder while held and
    # goes when released
    with io_utils.folder_lock(str(run_dir), "mine"):
        assert json.loads((run_dir / io_utils.LOCK_FILE).read_text())["pid"] == os.getpid()
        with pytest.raises(io_utils.FolderLockedError, match="mine"):
            with io_utils.folder_lock(str(run_dir)):
                pass
    assert not (run_dir / io_utils.LOCK_FILE).exists()


# --------------------------------------------------------------- 4. truncated images
def test_truncated_jpeg_and_png_are_errors_naming_the_file(tmp_path):
    rng = np.random.default_rng(0)
    jpg, png = tmp_path / "0.jpg", tmp_path / "0.png"
    cv2.imwrite(str(jpg), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cv2.imwrite(str(png), rng.integers(500, 4000, (64, 64)).astype(np.uint16))
    read_color(jpg)
    read_depth(png)
    for path, reader in ((jpg, read_color), (png, read_depth)):
        data = path.read_bytes()
        path.write_bytes(data[:len(data) * 2 // 3])
        with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated"):
            reader(path)
    # bytes after the end marker (zero padding) are not a truncation
    cv2.imwrite(str(jpg), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    jpg.write_bytes(jpg.read_bytes() + b"\x00" * 16)
    assert read_color(jpg).shape == (64, 64, 3)


# ------------------------------------------------------------------- 5. bad poses
@pytest.mark.parametrize("change, message", [
    (lambda p: p.__setitem__((slice(0, 3), slice(0, 3)), 1.1 * p[:3, :3]), "rigid"),
    (lambda p: p.__setitem__((slice(0, 3), slice(0, 3)), 0.0), "rigid"),
    (lambda p: p.__setitem__((0, 1), 0.2), "rigid"),
    (lambda p: p.__setitem__((slice(0, 3), 0), -p[:3, 0]), "det"),
    (lambda p: p.__setitem__((0, 3), 1e39), "translation"),
])
def test_poses_that_are_not_rigid_transforms_name_the_file(tmp_path, change, message):
    pose = np.eye(4)
    pose[:3, 3] = [0.5, -1.0, 2.0]
    path = tmp_path / "frame-000007.pose.txt"
    np.savetxt(path, pose)
    read_pose(path)
    change(pose)
    np.savetxt(path, pose)
    with pytest.raises(DataError, match=message) as err:
        read_pose(path)
    assert str(path) in str(err.value)


def test_real_7scenes_poses_pass_the_rigidity_check(redkitchen):
    for path in sorted(redkitchen.glob("*.pose.txt")):
        read_pose(path)


# --------------------------------------------------------------- 8. configuration
@pytest.mark.parametrize("text, message", [
    ("trian:\n  lr: 1.0e-3\n", "unknown section 'trian' \\(did you mean 'train'\\?\\)"),
    ("train:\n  lrr: 1.0e-3\n", "unknown option 'lrr' in section 'train' \\(did you mean 'lr'"),
    ("common:\n  lr: 1.0e-3\n", "'lr' in section 'common' \\(it belongs in section 'train'\\)"),
    ("eval:\n  loadckp: x.ckpt\n", "'loadckp' in section 'eval' \\(did you mean 'loadckpt'"),
    ("train:\n  epochs: seven\n", "option 'epochs' in section 'train' must be an integer"),
    ("train:\n  epochs: 1.5\n", "option 'epochs' in section 'train' must be an integer"),
    ("train:\n  resume: perhaps\n", "option 'resume' .* must be a boolean"),
    ("train:\n  lr: [1, 2]\n", "option 'lr' .* must be a number"),
    ("- train\n- lr\n", "the top level must be sections"),
    ("train: 3\n", "section 'train' must hold"),
])
def test_config_file_mistakes_name_the_file_the_key_and_the_nearest_name(tmp_path, text,
                                                                         message):
    path = tmp_path / "mine.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        load_config("train", ["--config", str(path)])
    assert str(path) in str(err.value)


def test_config_file_values_apply_and_are_given(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("train:\n  epochs: 3\n  lr: 1\neval:\n  seq_len: 7\n")
    args = load_config("train", ["--config", str(path), "--seed", "5"])
    assert (args.epochs, args.lr, args.seed) == (3, 1.0, 5) and isinstance(args.lr, float)
    assert args.given == {"epochs", "lr", "seed"} and "given" not in vars(args)


# ------------------------------------------------------------- 9. unfinished scenes
def test_metrics_leave_out_and_report_unfinished_scenes(estm_run, tmp_path, capsys):
    run = _copy_run(estm_run, tmp_path)
    (run / "estm" / "room0000" / "seq-02" / run_files.MARKER).unlink()   # interrupted
    with pytest.raises(run_metrics.IncompleteRunError, match="room0000/seq-02.*--allow_partial"):
        run_metrics.main(["--evalpath", str(run)])
    assert not (run / "estm" / "metrics.json").exists()
    results = run_metrics.main(["--evalpath", str(run), "--allow_partial", "True"])
    counts = results[str(run / "estm")]["counts"]
    assert counts["scenes_evaluated"] == 1 and counts["frames_predicted"] == 2
    assert counts["scenes_without_marker"] == ["room0000/seq-02"] and not counts["complete"]
    printed = capsys.readouterr().out
    assert "room0000/seq-02" not in printed and "1/2 scenes" in printed


def test_truncated_outputs_of_a_done_scene_are_detected_and_recomputed(seven_set, ckpt,
                                                                       estm_run, tmp_path):
    run = _copy_run(estm_run, tmp_path)
    scene = run / "estm" / "room0000" / "seq-01"
    reference = _files(scene)
    npy = scene / "refined_depth" / "frame-000001.color.npy"
    npy.write_bytes(npy.read_bytes()[:100])
    with pytest.raises(run_metrics.IncompleteRunError, match="truncated"):
        run_metrics.main(["--evalpath", str(run)])
    result = eval_hybrid_seq.main(_estm(seven_set, ckpt, run))
    assert result["scenes"]["room0000/seq-01"]["status"] == "evaluated"
    assert result["scenes"]["room0000/seq-02"]["status"] == "skipped"
    assert _files(scene) == reference


def test_an_unreadable_prediction_of_official_outputs_names_the_file(tmp_path):
    bad = tmp_path / "1.npy"
    bad.write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(ValueError, match=re.escape(str(bad))):
        run_metrics.load_prediction(bad)


# ------------------------------------------------------------ 10. nothing predicted
def test_a_scene_too_short_for_one_window_is_an_error_and_not_marked(seven_set, ckpt,
                                                                     tmp_path):
    with pytest.raises(eval_run.NothingPredictedError, match="lower --frame_interval"):
        eval_hybrid_seq.main(_estm(seven_set, ckpt, tmp_path, "--frame_interval", "10"))
    assert not list(tmp_path.rglob(run_files.MARKER))
    assert not list(tmp_path.rglob("*.npy"))


# ------------------------------------------------------------ 11. full disk, .tmp
def _disk_full(fd):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    target = tmp_path / "depth.npy"
    io_utils.save_npy(np.zeros(3), str(target))
    ckpt_path = tmp_path / "model_000000.ckpt"
    model = DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=5.0, resnet=18)
    monkeypatch.setattr(io_utils.os, "fsync", _disk_full)
    with pytest.raises(OSError, match=f"cannot write {re.escape(str(target))}.*ENOSPC"):
        io_utils.save_npy(np.ones(3), str(target))
    with pytest.raises(OSError, match=f"{re.escape(str(ckpt_path))}.*ENOSPC"):
        ckpt_io.save_checkpoint(str(ckpt_path), model)
    monkeypatch.undo()
    assert np.load(target).tolist() == [0, 0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["depth.npy"]


# ---------------------------------------------------------------------- 12. umask
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_outputs_respect_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        io_utils.save_json({"a": 1}, str(tmp_path / "a.json"))
        io_utils.save_torch({"a": 1}, str(tmp_path / "a.ckpt"))
        for name in ("a.json", "a.ckpt"):
            assert (tmp_path / name).stat().st_mode & 0o777 == mode
        assert io_utils.current_umask() == umask
    finally:
        os.umask(old)


# ------------------------------------------------------- 14. options before the work
def test_bad_options_are_refused_before_any_work(seven_set, ckpt, tmp_path, monkeypatch):
    monkeypatch.setattr(eval_run, "build_model", lambda *a, **k: pytest.fail("model built"))
    with pytest.raises(ValueError, match="--pred_resize"):
        eval_hybrid_seq.main(_estm(seven_set, ckpt, tmp_path, "--pred_resize", "cubic"))
    with pytest.raises(ValueError, match="min_depth_eval"):
        eval_hybrid_seq.main(_estm(seven_set, ckpt, tmp_path, "--min_depth_eval", "6",
                                   "--max_depth_eval", "5"))
    assert not list(tmp_path.iterdir())
    with pytest.raises(ConfigError, match="--depth_min \\(7.0\\) must be below --depth_max"):
        load_config("train", ["--depth_min", "7", "--depth_max", "6"])
    for bad in (["--height", "100"], ["--resnet", "20"], ["--lr", "0"]):
        with pytest.raises(ConfigError, match=bad[0]):
            load_config("train", bad)


# ------------------------------------------------------------------ 16. tensorboard
def test_tensorboard_is_a_pinned_requirement():
    import tensorboard

    pins = dict(line.split("==") for line in (ROOT / "requirements.txt").read_text().split()
                if "==" in line)
    assert pins.get("tensorboard") == tensorboard.__version__
    assert f"tensorboard=={tensorboard.__version__}" in (ROOT / "environment.yml").read_text()


# --------------------------------------------------- 17. model options from checkpoint
def test_model_options_come_from_the_checkpoint(seven_set, ckpt, tmp_path):
    # no model options: the defaults are the official ResNet-50, 64 planes
    argv = _estm(seven_set, ckpt, tmp_path, "--metrics", "False", "--datapath",
                 str(seven_set / "room0000" / "seq-01"), model=[])
    eval_hybrid_seq.main(argv)
    hashed = json.loads((tmp_path / "estm" / run_files.RUN_FILE).read_text())["hashed"]
    assert (hashed["resnet"], hashed["ndepths"], hashed["depth_max"]) == (18, 8, 10.0)
    with pytest.raises(ValueError, match="--ndepths 16 conflicts with the 8"):
        eval_hybrid_seq.main(argv + ["--ndepths", "16"])
    # agreeing explicit values are fine
    eval_hybrid_seq.main(argv + ["--resnet", "18"])


def test_official_checkpoints_keep_the_official_defaults():
    args = load_config("eval", [])
    eval_run.apply_checkpoint_options(args, {"model": {}, "epoch": 6})
    assert (args.resnet, args.ndepths, args.depth_min, args.depth_max,
            args.IF_EST_transformer) == (50, 64, 0.1, 10.0, True)


# ------------------------------------------------------------------ 18. --help texts
@pytest.mark.parametrize("section", ["train", "eval", "benchmark"])
def test_each_entry_point_help_describes_itself(section):
    text = " ".join(build_parser(section).format_help().split())
    assert "demo:" not in text
    assert "random seed" in text
    demo_text = " ".join(build_parser("demo").format_help().split())
    assert "demo: random seed" in demo_text
    if section == "train":
        assert "accepted for the official command line (only training is done here)" in text


# ---------------------------------------------------------- 19. the demo's README table
def _readme_demo_block() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"What it printed.*?```\n(.*?)```", text, re.S)
    assert block, "README: the demo's printed table is missing"
    return block.group(1).rstrip("\n").split("\n")


def test_readme_shows_the_demo_table_as_the_demo_prints_it():
    lines = _readme_demo_block()
    rows = [line for line in lines if re.match(r"^(synthetic|7scenes) ", line)]
    results = {}
    for line in rows:
        data, mode, model, *values = line.replace("|", " ").split()
        values = [float(v) for v in values]
        results.setdefault((data, model), {})[mode] = {"overall": {
            kind: {"mean_over_frames": dict(zip(demo.SHOWN, values[4 * k:4 * k + 4]))}
            for k, kind in enumerate(eval_run.DEPTH_KINDS)}}
    assert len(rows) == 8
    printed = demo.results_table(results) + "\n" + demo.improvement_lines(results)
    assert "\n".join(lines) == printed


# -------------------------------------------------------- 20. the released checkpoint
def test_readme_says_where_the_released_checkpoint_comes_from():
    text = (ROOT / "README.md").read_text()
    section = text[text.index("### The released checkpoint"):]
    section = section[:section.index("\n## ")]
    assert "github.com/xxlong0/ESTDepth" in section and "model_000006.ckpt" in section
    assert "drive.google.com" in section


# ------------------------------------------------------------ 21. synthetic command
def test_synthetic_command_takes_overwrite_true_and_its_output_is_ignored(tmp_path):
    argv = ["--out", str(tmp_path), "--scenes", "1", "--frames", "2", "--height", "32",
            "--width", "32", "--val", "0", "--test", "0", "--workers", "1"]
    synthetic_cli.main(argv)
    synthetic_cli.main(argv + ["--overwrite", "True"])
    with pytest.raises(FileExistsError):
        synthetic_cli.main(argv + ["--overwrite", "False"])
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    for path in ("data/synthetic/scene0000_00/x.jpg", "data/synthetic_7scenes/room0000/y.png"):
        assert subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT).returncode == 0
