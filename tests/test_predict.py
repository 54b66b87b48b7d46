"""predict.py end to end, and fusion of real ground-truth depth (the 7-Scenes sample)."""

import json

import cv2
import numpy as np
import pytest

import predict
from datasets.seven_scenes import SevenScenesSequence
from tests.helpers import load_ply
from evaluation import fusion
from utils.io import FolderLockedError, folder_lock

TINY = ["--resnet", "18", "--ndepths", "4", "--height", "128", "--width", "128",
        "--depth_min", "0.5", "--depth_max", "6", "--device", "cpu", "--log_level", "WARNING"]


def as_folder_capture(sample, root, frames=range(150, 200)):
    """The 7-Scenes sample rewritten as a DVMVS-style folder (links, one poses.txt)."""
    for sub in ("images", "depth"):
        (root / sub).mkdir(parents=True)
    poses = []
    for i in frames:
        (root / "images" / f"{i:06d}.png").symlink_to(sample / f"frame-{i:06d}.color.png")
        (root / "depth" / f"{i:06d}.png").symlink_to(sample / f"frame-{i:06d}.depth.png")
        poses.append(np.loadtxt(sample / f"frame-{i:06d}.pose.txt").reshape(16))
    np.savetxt(root / "poses.txt", np.array(poses))
    np.savetxt(root / "K.txt", np.loadtxt(sample / "camera-intrinsics.txt"))
    return root


@pytest.mark.slow
def test_predict_folder_capture_with_fusion(redkitchen, tmp_path, capfd, monkeypatch):
    capture = as_folder_capture(redkitchen, tmp_path / "capture")
    out = tmp_path / "out"
    argv = ["--input", str(capture), "--output", str(out), "--frame_interval", "10",
            "--fuse", "True", "--voxel_size", "0.05"] + TINY
    summary = predict.main(argv)
    assert "RANDOM weights" in capfd.readouterr().err
    assert summary["capture_format"] == "folder" and summary["random_weights"]
    # ESTM: 5 selected frames (every 10th of 50), all but the first and the last predicted.
    assert summary["frames"] == ["000160", "000170", "000180"]
    for stem in summary["frames"]:
        depth = cv2.imread(str(out / "depth" / f"{stem}.png"), cv2.IMREAD_UNCHANGED)
        assert depth.dtype == np.uint16 and depth.shape == (128, 128)
        assert 500 <= depth.min() and depth.max() <= 6000  # millimetres within the planes
        assert (out / "preview" / f"{stem}.jpg").is_file()
    saved = json.loads((out / "summary.json").read_text())
    assert saved["timing"]["frames_per_s"] > 0 and saved["options"]["mode"] == "estm"
    assert set(saved["depth_metrics"]) >= {"abs_rel", "rmse", "a1"}
    mesh_metrics = saved["fusion"]["metrics"]
    assert set(mesh_metrics) >= {"acc", "comp", "prec", "recall", "fscore"}
    assert len(load_ply(out / "mesh_gt.ply")) > 1000
    load_ply(out / "mesh.ply")

    # Re-running reuses the depth maps: the model is not run again.
    monkeypatch.setattr(predict, "predict_captures", None)
    again = predict.main(argv + ["--fuse", "False"])
    assert again["frames"] == summary["frames"] and "fusion" not in again
    # Another configuration in the same folder is refused.
    with pytest.raises(RuntimeError, match="another configuration"):
        predict.main(argv + ["--mode", "joint"])


def test_predict_errors(tmp_path, redkitchen):
    with pytest.raises(ValueError, match="--input is required"):
        predict.main(["--output", str(tmp_path)] + TINY)
    (tmp_path / "images").mkdir()
    with pytest.raises(Exception, match=r"cannot tell the capture format"):
        predict.main(["--input", str(tmp_path / "images"), "--output", str(tmp_path / "o")]
                     + TINY)
    # Joint needs a window of 5 that does not end on the last frame: 5 frames are too few.
    capture = as_folder_capture(redkitchen, tmp_path / "capture")
    with pytest.raises(ValueError, match="5 selected frame.*too few for one joint window"):
        predict.main(["--input", str(capture), "--output", str(tmp_path / "o"), "--mode",
                      "joint", "--frame_interval", "10"] + TINY)
    with pytest.raises(ValueError, match="--mode must be estm or joint"):
        predict.main(["--input", str(capture), "--output", str(tmp_path / "o"), "--mode",
                      "both"] + TINY)


@pytest.mark.slow
def test_ground_truth_fusion_agrees_with_real_depth(redkitchen):
    """Poses, intrinsics and units end to end: the 7-Scenes sample's ground-truth depth
    fused with its poses gives a mesh on which every frame's depth lies (median < 2 cm)."""
    seq = SevenScenesSequence(redkitchen, height=120, width=160, frame_interval=5,
                              intrinsics="dataset", depth_min=0.3, depth_max=3.0)
    frames, clouds = [], []
    for i in range(len(seq)):
        # Every 4th pixel of the 640x480 ground truth: pixel (u, v) is (4u, 4v) there, so
        # the 160x120 intrinsics (fx / 4, cx / 4, ...) describe it exactly.
        depth = seq[i]["dmap"][0].numpy()[::4, ::4]
        frames.append((depth, seq.cam_intr.numpy(), seq.poses[i]))
    mesh, _ = fusion.fuse_depths(frames, voxel_size=0.03, max_depth=3.0)
    surface = fusion.sample_surface(mesh, 200_000)
    for depth, K, pose in frames[::2]:
        clouds.append(fusion.depth_to_world_points(depth, K, pose))
    distance = fusion.point_distances(np.concatenate(clouds), surface)
    assert np.median(distance) < 0.02, np.median(distance)
    # Read the wrong way round (world-to-camera), the same check fails by far.
    wrong = [(d, K, np.linalg.inv(p)) for d, K, p in frames]
    wrong_mesh, _ = fusion.fuse_depths(wrong, voxel_size=0.03, max_depth=3.0)
    distance = fusion.point_distances(
        np.concatenate([fusion.depth_to_world_points(*f) for f in wrong[::2]]),
        fusion.sample_surface(wrong_mesh, 200_000))
    assert np.median(distance) > 0.04


def test_help_texts_come_from_the_entry_points_section():
    """Keys shared by sections (mode, height, ...) show their own section's --help."""
    from utils.config import read_defaults

    assert read_defaults(("common", "model", "eval"))[1]["mode"].startswith("accepted")
    assert read_defaults(("common", "model", "predict"))[1]["mode"].startswith("estm")
    assert read_defaults(("common", "model", "train"))[1]["height"].startswith("network input")
    assert read_defaults(("common", "model", "demo"))[1]["height"].startswith("demo:")


def test_predict_joint_mode(redkitchen, tmp_path):
    """Joint: 8 frames (every 7th) give one 5-frame window whose 3 inner frames are saved."""
    capture = as_folder_capture(redkitchen, tmp_path / "capture")
    summary = predict.main(["--input", str(capture), "--output", str(tmp_path / "out"),
                            "--mode", "joint", "--frame_interval", "7", "--fuse", "False",
                            "--save_images", "False"] + TINY)
    assert summary["frames"] == ["000157", "000164", "000171"]
    assert sorted(p.name for p in (tmp_path / "out" / "depth").iterdir()) == \
        ["000157.png", "000164.png", "000171.png"]
    assert not (tmp_path / "out" / "preview").exists()


def test_predict_runs_the_evaluation_inference_copy():
    """Folded batch norm and the fast layers, as eval_hybrid*.py run the model."""
    import torch

    from utils.config import load_config

    model = predict.make_model(load_config("predict", TINY), torch.device("cpu"), None)
    assert model.fast_layers and model.folded_batchnorms > 0 and not model.training


def _tiny_capture_run(redkitchen, tmp_path):
    capture = as_folder_capture(redkitchen, tmp_path / "capture", frames=range(150, 180))
    out = tmp_path / "out"
    argv = ["--input", str(capture), "--output", str(out), "--frame_interval", "10",
            "--fuse", "False", "--save_images", "False"] + TINY
    return capture, out, argv


def test_a_moved_capture_reuses_its_finished_depths(redkitchen, tmp_path, monkeypatch):
    capture, out, argv = _tiny_capture_run(redkitchen, tmp_path)
    first = predict.main(argv)
    moved = capture.rename(tmp_path / "moved")
    monkeypatch.setattr(predict, "predict_captures", None)  # the model must not run again
    again = predict.main([str(moved) if a == str(capture) else a for a in argv])
    assert again["config_hash"] == first["config_hash"]
    assert again["frames"] == first["frames"]


def test_a_truncated_depth_map_is_recomputed(redkitchen, tmp_path):
    _, out, argv = _tiny_capture_run(redkitchen, tmp_path)
    first = predict.main(argv)
    png = out / "depth" / f"{first['frames'][0]}.png"
    intact = png.read_bytes()
    png.write_bytes(intact[: len(intact) // 2])  # a full disk or an interrupted copy
    predict.main(argv)
    assert png.read_bytes() == intact


def test_a_second_run_into_a_locked_output_is_refused(redkitchen, tmp_path):
    _, out, argv = _tiny_capture_run(redkitchen, tmp_path)
    with folder_lock(str(out), "the other run"):
        with pytest.raises(FolderLockedError, match="the other run"):
            predict.main(argv)
    assert not (out / "depth").exists() and not (out / "summary.json").exists()


def test_predict_runs_and_records_the_checkpoints_options(redkitchen, tmp_path):
    from models.depthnet import DepthNetHybrid
    from utils.checkpoint import save_checkpoint

    ckpt = tmp_path / "own.ckpt"
    save_checkpoint(str(ckpt), DepthNetHybrid(ndepths=4, depth_min=0.5, depth_max=6.0,
                                              resnet=18), config={
        "resnet": 18, "ndepths": 4, "depth_min": 0.5, "depth_max": 6.0,
        "IF_EST_transformer": True, "height": 128, "width": 128})
    capture = as_folder_capture(redkitchen, tmp_path / "capture", frames=range(150, 180))
    summary = predict.main(["--input", str(capture), "--output", str(tmp_path / "out"),
                            "--loadckpt", str(ckpt), "--frame_interval", "10", "--fuse",
                            "False", "--device", "cpu", "--log_level", "WARNING"])
    hashed = summary["hashed"]
    assert (hashed["resnet"], hashed["ndepths"], hashed["depth_min"], hashed["height"],
            hashed["width"]) == (18, 4, 0.5, 128, 128)
    depth = cv2.imread(str(tmp_path / "out" / "depth" / "000160.png"), cv2.IMREAD_UNCHANGED)
    assert depth.shape == (128, 128)


def test_a_missing_checkpoint_says_where_the_released_one_is(tmp_path):
    with pytest.raises(FileNotFoundError, match="github.com/xxlong0/ESTDepth.*train_hybrid"):
        predict.main(["--input", str(tmp_path / "capture"), "--output", str(tmp_path / "o"),
                      "--loadckpt", str(tmp_path / "model_000006.ckpt")] + TINY)


def test_ground_truth_without_a_valid_pixel_is_said_and_gives_no_mesh_metrics(redkitchen,
                                                                              tmp_path, capfd):
    capture = as_folder_capture(redkitchen, tmp_path / "capture", frames=range(150, 180))
    for link in (capture / "depth").iterdir():
        link.unlink()
        cv2.imwrite(str(link), np.zeros((480, 640), np.uint16))
    summary = predict.main(["--input", str(capture), "--output", str(tmp_path / "out"),
                            "--frame_interval", "10", "--voxel_size", "0.05"] + TINY)
    assert "ground-truth depth maps hold no valid pixel" in capfd.readouterr().err
    assert "metrics" not in summary["fusion"] and (tmp_path / "out" / "mesh.ply").is_file()
