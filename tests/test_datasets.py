"""ScanNet and 7-Scenes loaders, split files and evaluation sequences on generated and real
data, including bad data (readers: test_dataset_io.py, windows: test_windows.py)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from datasets import scannet
from datasets.intrinsics import SEVEN_SCENES_K_33
from datasets.io import DataError
from datasets.scannet import ScanNetSequence, ScanNetTrainDataset
from datasets.sequence import stack_frames
from datasets.seven_scenes import TEST_LIST, SevenScenesSequence, list_sequences
from datasets.synthetic.writer import generate
from datasets.windows import joint_windows
from tests.helpers import write_matrix
from utils.geometry import depth_reprojection_error, relative_pose

REPO = Path(__file__).resolve().parents[1]
HEIGHT, WIDTH = 96, 128          # native size of the generated data
FRAMES = 110                     # 11 frames at interval 10: one official training window
SCENE = "scene0000_00"


def official_intrinsics(height: int, width: int) -> np.ndarray:
    """The official fixed intrinsics (fx = fy = 577.87, cx = 319.5, cy = 239.5 at 640x480)
    scaled by hand to ``height`` x ``width``: x by width / 640, y by height / 480."""
    sx, sy = width / 640, height / 480
    return np.array([[577.87 * sx, 0, 319.5 * sx], [0, 577.87 * sy, 239.5 * sy], [0, 0, 1]])


@pytest.fixture(scope="module")
def scannet_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("scannet")
    generate(root, "scannet", scenes=2, frames=FRAMES, height=HEIGHT, width=WIDTH, seed=11,
             val=0, test=0, workers=1)
    return root


@pytest.fixture(scope="module")
def seven_scenes_seq(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("seven")
    generate(root, "7scenes", scenes=1, frames=41, height=HEIGHT, width=WIDTH, seed=12, workers=1)
    return root / "room0000" / "seq-01"


@pytest.fixture()
def scene_copy(scannet_root, tmp_path) -> Path:
    """A private copy of one generated scene (``tmp_path/<scene>``) and its split file."""
    shutil.copytree(scannet_root / SCENE, tmp_path / SCENE,
                    ignore=shutil.ignore_patterns("estdepth_index_*"))
    (tmp_path / "split.txt").write_text(f"{SCENE}\n")
    return tmp_path / SCENE


def _train(root: Path, split: Path, **kwargs) -> ScanNetTrainDataset:
    kwargs = {"height": HEIGHT, "width": WIDTH, **kwargs}
    return ScanNetTrainDataset(root, split, **kwargs)


def _median_relative_error(depth_a, depth_b, world_T_a, world_T_b, K_33):
    """Median |z error| / z of depth ``a`` re-projected into view ``b``, and the overlap."""
    b_T_a = relative_pose(world_T_a[None], world_T_b[None])
    err, valid = depth_reprojection_error(depth_a[None], depth_b[None], b_T_a, K_33[None])
    return (err / depth_a.clamp(min=1e-6))[valid].median().item(), valid.float().mean().item()


# ----------------------------------------------------------------------------- split files

def test_split_files_hold_the_official_lists():
    official_7scenes = ["chess/seq-03", "chess/seq-05", "fire/seq-03", "fire/seq-04",
                        "heads/seq-01", "office/seq-02", "office/seq-06", "office/seq-07",
                        "office/seq-09", "pumpkin/seq-01", "pumpkin/seq-07", "redkitchen/seq-03",
                        "redkitchen/seq-04", "redkitchen/seq-06", "redkitchen/seq-12",
                        "redkitchen/seq-14", "stairs/seq-01", "stairs/seq-04"]
    assert TEST_LIST.read_text().splitlines() == official_7scenes
    splits = {name: (REPO / "data" / "scannet_split" / f"{name}_split.txt").read_text().split()
              for name in ("train", "val", "test")}
    assert {name: len(set(scenes)) for name, scenes in splits.items()} == \
        {"train": 1201, "val": 312, "test": 100}
    assert not set(splits["train"]) & set(splits["val"])


# ----------------------------------------------------------------------------- ScanNet training

def test_scannet_training_sample_shapes_dtypes_and_ranges(scannet_root):
    ds = _train(scannet_root, scannet_root / "splits" / "train_split.txt", height=64, width=80)
    assert len(ds) == 2  # one window per 110-frame scene at interval 10
    sample = ds[0]
    assert sample["imgs"].shape == (5, 3, 64, 80) and sample["imgs"].dtype == torch.float32
    assert 0 <= sample["imgs"].min() and sample["imgs"].max() <= 255 and sample["imgs"].std() > 10
    assert sample["dmaps"].shape == (5, 1, 64, 80) and sample["dmaps"].dtype == torch.float32
    assert sample["dmasks"].shape == (5, 1, 64, 80) and sample["dmasks"].dtype == torch.bool
    assert (sample["dmaps"][~sample["dmasks"]] == 0).all()
    valid = sample["dmaps"][sample["dmasks"]]
    assert 0.1 <= valid.min() and valid.max() <= 10.0
    assert sample["cam_poses"].shape == (5, 4, 4) and sample["cam_poses"].dtype == torch.float32
    torch.testing.assert_close(sample["cam_poses"][:, 3], torch.tensor([[0.0, 0, 0, 1]] * 5))
    np.testing.assert_allclose(sample["cam_intr"].numpy(), official_intrinsics(64, 80), rtol=1e-6)
    np.testing.assert_allclose(sample["cam_intr"][0].numpy(), [577.87 / 8, 0, 319.5 / 8],
                               rtol=1e-6)
    np.testing.assert_allclose(sample["cam_intr"][1].numpy(),
                               [0, 577.87 * 64 / 480, 239.5 * 64 / 480], rtol=1e-6)
    assert sample["frame_ids"] == [0, 10, 20, 30, 40]
    assert sample["img_paths"][1].endswith(f"{SCENE}/rgb/10.jpg")


def test_scannet_training_windows_match_the_official_sampler(scannet_root):
    ds = _train(scannet_root, scannet_root / "splits" / "train_split.txt", frame_interval=5)
    # 22 frames kept per scene (ids 0, 5, ..., 105); starts range(0, 22 - 10, 2).
    expected = [[5 * (start + k) for k in range(5)] for start in range(0, 12, 2)]
    assert [ids for _, ids in ds.windows] == expected * 2
    assert ds.excluded_windows == 0 and ds.cut_scans == {}


def test_scannet_scene_intrinsics_are_read_and_checked(scene_copy):
    root, split = scene_copy.parent, scene_copy.parent / "split.txt"
    ds = _train(root, split, height=48, width=64, intrinsics="scene")
    # The generator wrote the official values scaled to 96x128, so both modes agree.
    np.testing.assert_allclose(ds[0]["cam_intr"].numpy(), official_intrinsics(48, 64), rtol=1e-6)
    full_res = np.eye(4)
    full_res[:3, :3] = [[1170.2, 0, 647.8], [0, 1170.2, 483.8], [0, 0, 1]]  # 1296x968 values
    write_matrix(scene_copy / "intrinsic" / "intrinsic_color.txt", full_res)
    with pytest.raises(DataError, match=r"intrinsic_color\.txt .* do not fit the 96x128"):
        _train(root, split, intrinsics="scene", reloadscan=True)


def test_scannet_depth_reprojects_consistently_10_frames_apart(scannet_root):
    ds = _train(scannet_root, scannet_root / "splits" / "train_split.txt", frame_interval=5)
    for index in (0, len(ds) - 1):
        sample = ds[index]
        for a, b in ((0, 2), (1, 3), (2, 4)):  # frame ids 10 apart
            depths, poses = sample["dmaps"], sample["cam_poses"]
            median, overlap = _median_relative_error(depths[a], depths[b], poses[a], poses[b],
                                                     sample["cam_intr"])
            assert overlap > 0.3 and median < 0.01


# ----------------------------------------------------------------------------- index cache

def test_index_cache_is_reused_and_rebuilt_when_stale(scene_copy, monkeypatch):
    root, split = scene_copy.parent, scene_copy.parent / "split.txt"
    first = _train(root, split)
    caches = list(scene_copy.glob("estdepth_index_*.json"))
    assert [p.name for p in caches] == ["estdepth_index_i10_96x128_d0.1-10.json"]

    builds = []
    real_build = scannet.build_scene_index
    monkeypatch.setattr(scannet, "build_scene_index",
                        lambda *a, **k: builds.append(1) or real_build(*a, **k))
    assert _train(root, split).windows == first.windows and builds == []
    _train(root, split, reloadscan=True)
    assert len(builds) == 1
    _train(root, split, depth_max=5.0)  # other parameters: another cache file
    assert len(builds) == 2 and len(list(scene_copy.glob("estdepth_index_*.json"))) == 2
    caches[0].write_text(caches[0].read_text().replace('"version": 1', '"version": 0'))
    assert _train(root, split).windows == first.windows and len(builds) == 3
    caches[0].write_text("{truncated")
    assert _train(root, split).windows == first.windows and len(builds) == 4


def test_read_only_dataset_keeps_the_index_in_memory(scene_copy, monkeypatch, caplog):
    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(scannet, "save_json", read_only)
    with caplog.at_level(logging.WARNING, logger="datasets.scannet"):
        ds = _train(scene_copy.parent, scene_copy.parent / "split.txt")
    assert len(ds) == 1 and ds[0]["frame_ids"] == [0, 10, 20, 30, 40]
    assert "keeping scene indices in memory" in caplog.text
    assert not list(scene_copy.glob("estdepth_index_*"))


def test_cache_dir_option_stores_the_index_elsewhere(scene_copy, tmp_path):
    cache_dir = tmp_path / "cache"
    _train(scene_copy.parent, scene_copy.parent / "split.txt", cache_dir=cache_dir)
    assert list((cache_dir / SCENE).glob("estdepth_index_*.json"))
    assert not list(scene_copy.glob("estdepth_index_*"))


# ----------------------------------------------------------------------------- ScanNet bad data

@pytest.mark.parametrize("relative", ["rgb/20.jpg", "pose/20.txt", "depth/20.png"])
def test_training_index_names_a_missing_file(scene_copy, relative):
    (scene_copy / relative).unlink()
    with pytest.raises(DataError, match=f"{SCENE}/{relative}"):
        _train(scene_copy.parent, scene_copy.parent / "split.txt")


def test_training_sample_names_a_corrupt_image(scene_copy):
    ds = _train(scene_copy.parent, scene_copy.parent / "split.txt")
    (scene_copy / "rgb" / "20.jpg").write_bytes(b"\xff\xd8 truncated jpeg")
    with pytest.raises(DataError, match=f"cannot decode colour image .*{SCENE}/rgb/20.jpg"):
        ds[0]


def test_training_scan_ends_at_the_first_nonfinite_subsampled_pose(scene_copy, caplog):
    root, split = scene_copy.parent, scene_copy.parent / "split.txt"
    # Frame 61 is not among every 5th frame: like the official loader, it does not matter.
    write_matrix(scene_copy / "pose" / "61.txt", np.full((4, 4), np.nan))
    assert len(_train(root, split, frame_interval=5)) == 6
    write_matrix(scene_copy / "pose" / "60.txt", np.full((4, 4), -np.inf))
    with caplog.at_level(logging.INFO, logger="datasets.scannet"):
        ds = _train(root, split, frame_interval=5, reloadscan=True)
    # 12 frames (ids 0..55) remain: one window.
    assert [ids for _, ids in ds.windows] == [[0, 5, 10, 15, 20]]
    assert ds.cut_scans[SCENE].endswith("pose/60.txt")
    assert "cut at non-finite pose" in caplog.text and "pose/60.txt" in caplog.text


def test_training_rejects_a_depth_map_of_another_size(scene_copy):
    cv2.imwrite(str(scene_copy / "depth" / "30.png"), np.full((48, 64), 1000, np.uint16))
    with pytest.raises(DataError, match=f"{SCENE}/depth/30.png is 48x64 .* are 96x128"):
        _train(scene_copy.parent, scene_copy.parent / "split.txt")


def test_split_file_listing_an_absent_scene_is_an_error(scene_copy):
    split = scene_copy.parent / "split.txt"
    split.write_text(f"{SCENE}\nscene0999_00\n")
    with pytest.raises(DataError, match=r"split\.txt lists 1 entry absent .*scene0999_00"):
        _train(scene_copy.parent, split)


def test_windows_with_too_little_valid_depth_are_excluded_and_logged(scene_copy, caplog):
    path = scene_copy / "depth" / "30.png"
    depth = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    depth[: HEIGHT // 2 + 1] = 0  # just under half of the pixels stay valid
    cv2.imwrite(str(path), depth)
    with caplog.at_level(logging.INFO, logger="datasets.scannet"):
        ds = _train(scene_copy.parent, scene_copy.parent / "split.txt", frame_interval=5)
    # Frame 30 is the 7th kept frame: the windows starting at 2, 4 and 6 contain it.
    assert ds.excluded_windows == 3
    assert [ids[0] for _, ids in ds.windows] == [0, 40, 50]
    assert "excluded 3 window(s)" in caplog.text


# ---------------------------------------------------------------------------- evaluation sequences

def test_scannet_sequence_items_and_joint_windows(scannet_root):
    seq = ScanNetSequence(scannet_root / SCENE, height=64, width=80)
    assert [frame.frame_id for frame in seq.frames] == list(range(0, FRAMES, 10))
    item = seq[1]
    assert item["img"].shape == (3, 64, 80) and item["img"].dtype == torch.float32
    assert item["dmap"].shape == (1, HEIGHT, WIDTH)  # native ground-truth resolution
    assert item["dmask"].dtype == torch.bool and (item["dmap"][~item["dmask"]] == 0).all()
    assert item["dmap"][item["dmask"]].max() <= 5.0
    assert item["frame_id"] == 10 and item["img_path"].endswith("rgb/10.jpg")
    np.testing.assert_allclose(item["cam_intr"].numpy(), official_intrinsics(64, 80), rtol=1e-6)

    small = ScanNetSequence(scannet_root / SCENE, depth_size=(48, 64))[1]["dmap"]
    assert small.shape == (1, 48, 64)
    assert set(small.unique().tolist()) <= set(item["dmap"].unique().tolist())  # nearest

    windows = joint_windows(len(seq))
    assert windows == [[0, 1, 2, 3, 4], [3, 4, 5, 6, 7]]
    batch = stack_frames([seq[i] for i in windows[1]])
    assert batch["imgs"].shape == (5, 3, 64, 80) and batch["frame_ids"] == [30, 40, 50, 60, 70]


def test_eval_sequence_skips_and_counts_nonfinite_poses(scene_copy, caplog):
    write_matrix(scene_copy / "pose" / "20.txt", np.full((4, 4), np.inf))
    with caplog.at_level(logging.WARNING, logger="datasets.sequence"):
        seq = ScanNetSequence(scene_copy)
    assert seq.skipped_nonfinite == 1
    assert 20 not in [frame.frame_id for frame in seq.frames] and len(seq) == 10
    assert f"{SCENE}/pose/20.txt" in caplog.text


def test_eval_sequence_marks_missing_depth_and_names_other_bad_files(scene_copy):
    (scene_copy / "depth" / "20.png").unlink()
    seq = ScanNetSequence(scene_copy)
    assert seq.missing_depth == [scene_copy / "depth" / "20.png"]
    item = seq[2]
    assert item["frame_id"] == 20 and item["dmap"] is None and item["dmask"] is None
    assert seq[3]["dmap"] is not None

    cv2.imwrite(str(scene_copy / "depth" / "30.png"), np.ones((10, 10), np.uint16))
    with pytest.raises(DataError, match=f"{SCENE}/depth/30.png is 10x10"):
        seq[3]
    (scene_copy / "rgb" / "40.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match=f"{SCENE}/rgb/40.jpg"):
        seq[4]
    (scene_copy / "rgb" / "50.jpg").unlink()
    with pytest.raises(DataError, match=f"colour image missing: .*{SCENE}/rgb/50.jpg"):
        ScanNetSequence(scene_copy)


# ----------------------------------------------------------------------------- 7-Scenes

def test_seven_scenes_intrinsics_modes(seven_scenes_seq):
    dataset = SevenScenesSequence(seven_scenes_seq, height=48, width=64, intrinsics="dataset")
    np.testing.assert_allclose(dataset.cam_intr.numpy(), SEVEN_SCENES_K_33 * [[0.1], [0.1], [1]],
                               rtol=1e-6)
    official = SevenScenesSequence(seven_scenes_seq, height=48, width=64)
    np.testing.assert_allclose(official.cam_intr.numpy(), official_intrinsics(48, 64), rtol=1e-6)


def test_seven_scenes_sequence_lists(seven_scenes_seq, tmp_path):
    root = seven_scenes_seq.parents[1]
    assert list_sequences(seven_scenes_seq) == [seven_scenes_seq]
    assert list_sequences(root, root / "splits" / "test.txt") == [seven_scenes_seq]
    (tmp_path / "list.txt").write_text("room0000/seq-01\nchess/seq-03\n")
    with pytest.raises(DataError, match=r"list\.txt lists 1 entry absent .*chess/seq-03"):
        list_sequences(root, tmp_path / "list.txt")


def test_seven_scenes_synthetic_depth_reprojects_consistently(seven_scenes_seq):
    seq = SevenScenesSequence(seven_scenes_seq, height=HEIGHT, width=WIDTH, intrinsics="dataset")
    assert [frame.frame_id for frame in seq.frames] == [0, 10, 20, 30, 40]
    for a, b in ((0, 1), (2, 3)):
        ia, ib = seq[a], seq[b]
        median, overlap = _median_relative_error(ia["dmap"], ib["dmap"], ia["cam_pose"],
                                                 ib["cam_pose"], ia["cam_intr"])
        assert overlap > 0.3 and median < 0.01


def test_seven_scenes_65535_is_invalid(seven_scenes_seq, tmp_path):
    seq_dir = tmp_path / "seq-01"
    shutil.copytree(seven_scenes_seq, seq_dir)
    path = seq_dir / "frame-000000.depth.png"
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    raw[:10] = 65535
    cv2.imwrite(str(path), raw)
    item = SevenScenesSequence(seq_dir, intrinsics="dataset")[0]
    assert not item["dmask"][0, :10].any() and (item["dmap"][0, :10] == 0).all()
    assert item["dmask"][0, 10:].all()


def test_real_7scenes_depth_reprojects_within_3cm(redkitchen, tmp_path):
    (tmp_path / "list.txt").write_text("redkitchen/seq-sample\n")
    assert list_sequences(redkitchen.parents[1], tmp_path / "list.txt") == [redkitchen]
    assert list_sequences(redkitchen) == [redkitchen]
    seq = SevenScenesSequence(redkitchen, height=480, width=640, intrinsics="dataset")
    assert [frame.frame_id for frame in seq.frames] == [150, 160, 170, 180, 190]
    np.testing.assert_allclose(seq.cam_intr.numpy(), SEVEN_SCENES_K_33, rtol=1e-6)
    items = [seq[i] for i in range(len(seq))]
    for a, b in zip(items[:-1], items[1:]):  # frames 10 apart
        b_T_a = relative_pose(a["cam_pose"][None], b["cam_pose"][None])
        err, valid = depth_reprojection_error(a["dmap"][None], b["dmap"][None], b_T_a,
                                              a["cam_intr"][None])
        assert valid.float().mean() > 0.3
        assert err[valid].median() < 0.03
    default = SevenScenesSequence(redkitchen)
    np.testing.assert_allclose(default.cam_intr.numpy(), official_intrinsics(256, 320), rtol=1e-6)
    assert default[0]["img"].shape == (3, 256, 320) and default[0]["dmap"].shape == (1, 480, 640)
