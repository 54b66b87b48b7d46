"""eval_hybrid.py (Joint) and eval_hybrid_seq.py (ESTM): outputs, markers, metrics, resuming."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import eval_hybrid
import eval_hybrid_seq
from datasets.synthetic.writer import generate
from models.depthnet import DepthNetHybrid
from evaluation import run as eval_run
from evaluation import run_files
from tests.helpers import hand_metrics
from utils.checkpoint import save_checkpoint
from utils.options import ModelOptions, from_mapping

NATIVE_HW = (240, 320)   # generated ground truth; the network runs at 128x160 (ratio 1.875 x 2)
NET = ["--height", "128", "--width", "160", "--device", "cpu", "--log_level", "WARNING"]
SMALL_MODEL = ["--resnet", "18", "--ndepths", "8", "--depth_min", "0.1", "--depth_max", "10"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "random_r18.ckpt"
    save_checkpoint(str(path), DepthNetHybrid(ndepths=8, depth_min=0.1, depth_max=10.0,
                                              resnet=18))
    return str(path)


@pytest.fixture(scope="module")
def scannet_set(tmp_path_factory):
    """One synthetic test scene of 9 frames (ScanNet layout)."""
    root = tmp_path_factory.mktemp("synthetic_scannet")
    generate(root, "scannet", scenes=1, frames=9, height=NATIVE_HW[0], width=NATIVE_HW[1],
             seed=5, val=0, test=1, workers=1)
    return root


@pytest.fixture(scope="module")
def seven_set(tmp_path_factory):
    """Two synthetic sequences of 4 frames (7-Scenes layout)."""
    root = tmp_path_factory.mktemp("synthetic_7scenes")
    generate(root, "7scenes", scenes=2, frames=4, height=NATIVE_HW[0], width=NATIVE_HW[1],
             seed=6, val=0, test=0, workers=1)
    return root


def _estm_args(seven_set, ckpt, evalpath, *extra):
    return [*NET, *SMALL_MODEL, "--eval_dataset", "7scenes", "--datapath", str(seven_set),
            "--testlist", str(seven_set / "splits" / "test.txt"), "--intrinsics", "dataset",
            "--frame_interval", "1", "--loadckpt", ckpt, "--evalpath", str(evalpath),
            "--save_init_prob", "True", "--save_refined_prob", "True", *extra]


@pytest.fixture(scope="module")
def joint_run(scannet_set, ckpt, tmp_path_factory):
    evalpath = tmp_path_factory.mktemp("joint_eval")
    result = eval_hybrid.main([*NET, *SMALL_MODEL, "--eval_dataset", "synthetic",
                               "--datapath", str(scannet_set), "--frame_interval", "1",
                               "--loadckpt", ckpt, "--evalpath", str(evalpath)])
    return result


@pytest.fixture(scope="module")
def estm_run(seven_set, ckpt, tmp_path_factory):
    evalpath = tmp_path_factory.mktemp("estm_eval")
    return eval_hybrid_seq.main(_estm_args(seven_set, ckpt, evalpath))


def _tree(run_dir: Path) -> dict:
    """{relative path: bytes} of every file under a run folder."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def _check_scene(scene_dir: Path, stems: list, kinds: list, dtype=np.float32):
    marker = json.loads((scene_dir / run_files.MARKER).read_text())
    assert marker["frames"] == stems and marker["num_frames"] == len(stems)
    expected = {f"{kind}/{stem}{ext}" for kind in kinds for stem in stems
                for ext in (".npy", ".jpg")}
    assert set(marker["files"]) == expected
    on_disk = {p.relative_to(scene_dir).as_posix() for p in scene_dir.rglob("*")
               if p.is_file() and p.name != run_files.MARKER}
    assert on_disk == expected
    for kind in kinds:
        for stem in stems:
            value = np.load(scene_dir / kind / f"{stem}.npy")
            assert value.shape == (128, 160) and value.dtype == dtype
            assert np.isfinite(value).all()
            if kind.endswith("prob"):
                assert value.min() >= 0 and value.max() <= 1
            else:
                assert value.min() > 0 and value.max() <= 10.0
            assert cv2.imread(str(scene_dir / kind / f"{stem}.jpg")).shape == (128, 160, 3)
    return marker


def test_joint_scannet_layout_outputs_and_metrics(joint_run, scannet_set):
    run_dir = Path(joint_run["run_dir"])
    assert run_dir.name == "joint"
    # 9 frames: windows 0-4 and 3-7 (the second with the first one's memory), targets 1-6
    marker = _check_scene(run_dir / "scene0000_00", [str(i) for i in range(1, 7)],
                          ["init_depth", "refined_depth"])
    assert marker["windows"] == 2 and marker["skipped_nonfinite"] == 0
    run = json.loads((run_dir / "run.json").read_text())
    assert marker["config_hash"] == run["config_hash"] == joint_run["config_hash"]
    assert joint_run["scenes"]["scene0000_00"]["status"] == "evaluated"

    # metrics of the saved predictions, recomputed with numpy + cv2 (synthetic: 0.1-10 m)
    results = joint_run["metrics"]
    assert json.loads((run_dir / "metrics.json").read_text()) == \
        json.loads(json.dumps(results))
    with open(run_dir / "metrics_frames.csv") as f:
        rows = {(r["depth"], r["frame"]): r for r in csv.DictReader(f)}
    hand = {}
    for kind in ("init_depth", "refined_depth"):
        for i in range(1, 7):
            pred = np.load(run_dir / "scene0000_00" / kind / f"{i}.npy")
            gt = cv2.imread(str(scannet_set / "scene0000_00" / "depth" / f"{i}.png"),
                            cv2.IMREAD_UNCHANGED).astype(np.float64) / 1000
            assert gt.shape == NATIVE_HW
            up = cv2.resize(pred, NATIVE_HW[::-1], interpolation=cv2.INTER_LINEAR)
            mask = (gt >= 0.1) & (gt <= 10.0)
            hand[kind, i] = hand_metrics(gt[mask], up[mask].astype(np.float64))
    for name, value in hand["refined_depth", 3].items():       # one frame, every metric
        assert float(rows["refined_depth", "3"][name]) == pytest.approx(value, rel=1e-5,
                                                                         abs=1e-7), name
    for kind in ("init_depth", "refined_depth"):                # and the scene means
        scene = results["scenes"]["scene0000_00"][kind]
        assert scene["frames"] == 6 and scene["tc_pairs"] == 5
        for name in hand[kind, 1]:
            want = np.mean([hand[kind, i][name] for i in range(1, 7)])
            assert scene[name] == pytest.approx(want, rel=1e-5, abs=1e-7), (kind, name)
            assert results["overall"][kind]["mean_over_frames"][name] == \
                pytest.approx(want, rel=1e-5, abs=1e-7)


def test_estm_7scenes_layout_outputs(estm_run):
    run_dir = Path(estm_run["run_dir"])
    assert run_dir.name == "estm"
    kinds = ["init_depth", "refined_depth", "init_prob", "refined_prob"]
    for seq in ("room0000/seq-01", "room0001/seq-01"):
        # 4 frames: 2 sliding windows (the second with the first's memory), frames 1-2
        marker = _check_scene(run_dir / seq, [f"frame-{i:06d}.color" for i in (1, 2)], kinds)
        assert marker["windows"] == 2
    counts = estm_run["metrics"]["counts"]
    assert counts["frames_predicted"] == 4 and counts["frames_missing_gt"] == 0
    assert counts["scenes_without_marker"] == []


def test_joint_7scenes_layout_and_estm_scannet_layout(seven_set, scannet_set, ckpt, tmp_path):
    joint = eval_hybrid.main(_estm_args(seven_set, ckpt, tmp_path, "--seq_len", "3",
                                        "--save_init_prob", "False", "--save_refined_prob",
                                        "False", "--save_dtype", "float16",
                                        "--datapath", str(seven_set / "room0001" / "seq-01")))
    # one sequence folder as --datapath; 4 frames, one window of 3 (never ending on the last)
    assert list(joint["scenes"]) == ["room0001/seq-01"]
    _check_scene(tmp_path / "joint" / "room0001" / "seq-01", ["frame-000001.color"],
                 ["init_depth", "refined_depth"], dtype=np.float16)

    estm = eval_hybrid_seq.main([*NET, *SMALL_MODEL, "--eval_dataset", "synthetic",
                                 "--datapath", str(scannet_set), "--frame_interval", "3",
                                 "--loadckpt", ckpt, "--evalpath", str(tmp_path),
                                 "--save_images", "False", "--metrics", "False"])
    assert estm["metrics"] is None
    scene_dir = tmp_path / "estm" / "scene0000_00"
    marker = json.loads((scene_dir / run_files.MARKER).read_text())
    assert marker["frames"] == ["3"] and marker["frame_ids"] == [3]   # frames 0, 3, 6
    assert sorted(p.name for p in scene_dir.rglob("*.*") if p.is_file()) == \
        [".done.json", "3.npy", "3.npy"]


class Killed(BaseException):
    """Stands for a kill: not an Exception, so nothing on the way may swallow it."""


def test_interrupted_evaluation_resumes_to_identical_files(seven_set, ckpt, estm_run,
                                                           tmp_path, monkeypatch):
    reference = _tree(Path(estm_run["run_dir"]))
    evalpath = tmp_path / "interrupted"
    real_save, calls = eval_run.save_target, []

    def crash_on_fourth_frame(*args, **kwargs):
        calls.append(args[1])
        if len(calls) == 4:   # the second frame of the second sequence
            raise Killed("simulated kill")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(eval_run, "save_target", crash_on_fourth_frame)
    with pytest.raises(Killed):
        eval_hybrid_seq.main(_estm_args(seven_set, ckpt, evalpath))
    monkeypatch.setattr(eval_run, "save_target", real_save)

    run_dir = evalpath / "estm"
    first, second = run_dir / "room0000" / "seq-01", run_dir / "room0001" / "seq-01"
    assert (first / run_files.MARKER).is_file() and not (second / run_files.MARKER).exists()
    assert (second / "init_depth" / "frame-000001.color.npy").is_file()  # a partial scene
    (second / "init_depth" / "stale.npy").write_bytes(b"left over")
    done_before = {p: p.stat().st_mtime_ns for p in first.rglob("*") if p.is_file()}

    resumed = eval_hybrid_seq.main(_estm_args(seven_set, ckpt, evalpath))
    assert resumed["scenes"]["room0000/seq-01"]["status"] == "skipped"
    assert resumed["scenes"]["room0001/seq-01"]["status"] == "evaluated"
    assert {p: p.stat().st_mtime_ns for p in done_before} == done_before
    assert _tree(run_dir) == reference


def test_other_configuration_is_refused(seven_set, ckpt, estm_run):
    evalpath = Path(estm_run["run_dir"]).parent
    with pytest.raises(RuntimeError, match="another configuration"):
        eval_hybrid_seq.main(_estm_args(seven_set, ckpt, evalpath, "--memory_size", "1",
                                        "--metrics", "False"))


def _pose_file(folder: Path, frame_id: int) -> torch.Tensor:
    return torch.from_numpy(np.loadtxt(folder / f"frame-{frame_id:06d}.pose.txt"))


def _record_decode_calls(monkeypatch) -> list:
    """Every ``DepthNetHybrid.decode`` call (the evaluation loop's model call): its poses,
    intrinsics and memory, and what it returned."""
    calls, real_decode = [], DepthNetHybrid.decode

    def spy(self, matching, context, world_T_cam_bn44, cam_intr, memory=None, use_est=None):
        outputs, handed_on = real_decode(self, matching, context, world_T_cam_bn44, cam_intr,
                                         memory, use_est)
        calls.append({"poses": world_T_cam_bn44.clone(), "K": cam_intr.clone(),
                      "memory": memory, "outputs": outputs, "handed_on": handed_on})
        return outputs, handed_on

    monkeypatch.setattr(DepthNetHybrid, "decode", spy)
    return calls


def _estm_with_reference_weights(reference, datapath: Path, interval: int, tmp_path) -> dict:
    cfg = reference["config"]
    model = DepthNetHybrid.from_options(from_mapping(ModelOptions, cfg), reference["weights"],
                                        source="the reference fixture").eval()
    ckpt = tmp_path / "reference.ckpt"
    save_checkpoint(str(ckpt), model)
    return eval_hybrid_seq.main([
        "--height", str(cfg["height"]), "--width", str(cfg["width"]), "--device", "cpu",
        "--log_level", "WARNING", "--resnet", str(cfg["resnet"]), "--ndepths",
        str(cfg["ndepths"]), "--depth_min", str(cfg["depth_min"]), "--depth_max",
        str(cfg["depth_max"]), "--IF_EST_transformer", str(cfg["IF_EST_transformer"]),
        "--eval_dataset", "7scenes", "--datapath", str(datapath), "--frame_interval",
        str(interval), "--loadckpt", str(ckpt), "--evalpath", str(tmp_path / "out"),
        "--save_images", "False"])


@pytest.mark.slow
@torch.no_grad()
def test_estm_on_real_frames_feeds_the_model_what_the_protocol_says(reference, redkitchen,
                                                                     tmp_path, monkeypatch):
    """Reference weights on real 7-Scenes frames, every value the model is fed computed by
    hand: the frames of each window (from --frame_interval and --lwindow), the intrinsics
    (the official ones scaled to the network size) and the memory entries each window
    receives; then the saved files equal what the model returned."""
    calls = _record_decode_calls(monkeypatch)
    interval = 9
    result = _estm_with_reference_weights(reference, redkitchen, interval, tmp_path)

    # Frames: every 9th frame id of the sample (150..199), windows of 3 sliding by one.
    ids = sorted(int(p.name[len("frame-"):len("frame-000000")])
                 for p in redkitchen.glob("frame-*.color.png"))
    chosen = ids[::interval]
    assert chosen == [150, 159, 168, 177, 186, 195]
    windows = [chosen[s:s + 3] for s in range(len(chosen) - 2)]
    assert len(calls) == len(windows)
    h, w = reference["config"]["height"], reference["config"]["width"]
    K_by_hand = torch.tensor([[577.87 * w / 640, 0.0, 319.5 * w / 640],
                              [0.0, 577.87 * h / 480, 239.5 * h / 480], [0.0, 0.0, 1.0]])
    for call, window in zip(calls, windows):
        poses = torch.stack([_pose_file(redkitchen, i) for i in window])
        torch.testing.assert_close(call["poses"][0].double(), poses, rtol=0, atol=1e-6)
        torch.testing.assert_close(call["K"][0], K_by_hand, rtol=1e-6, atol=1e-5)

    # Memory: none for the first window, then the view each of the last two windows handed
    # on, oldest first (--memory_size 2: the 4th window no longer sees the 1st's).
    for call, sources in zip(calls, ([], [0], [0, 1], [1, 2])):
        memory = call["memory"]
        if not sources:
            assert memory is None
            continue
        assert len(memory) == len(sources)
        for view, source in enumerate(sources):
            given = calls[source]["handed_on"]
            assert torch.equal(memory.keys_bcdhw[view], given.keys_bcdhw[0])
            assert torch.equal(memory.values_bcdhw[view], given.values_bcdhw[0])
        # Official quirk (models/hybrid_decoder.py): a window given memory hands on the pose
        # of the newest memory, so every memory keeps the first window's target pose.
        for pose in memory.world_T_cam_b44:
            torch.testing.assert_close(pose[0].double(), _pose_file(redkitchen, chosen[1]),
                                       rtol=0, atol=1e-6)

    # Saved files: the middle frame of each window, exactly the depths the model returned.
    scene_dir = tmp_path / "out" / "estm" / "redkitchen" / "seq-sample"
    for kind, scale in (("init_depth", 2), ("refined_depth", 0)):
        assert sorted(p.name for p in (scene_dir / kind).glob("*.npy")) == \
            [f"frame-{window[1]:06d}.color.npy" for window in windows]
        for call, window in zip(calls, windows):
            saved = np.load(scene_dir / kind / f"frame-{window[1]:06d}.color.npy")
            np.testing.assert_array_equal(saved, call["outputs"][("depth", 0, scale)][0, 0])

    counts = result["metrics"]["counts"]
    assert counts["frames_predicted"] == 4 and counts["frames_missing_gt"] == 0
    overall = result["metrics"]["overall"]["refined_depth"]["mean_over_frames"]
    assert overall["frames"] == 4 and all(np.isfinite(v) for v in overall.values())


def test_frames_read_ahead_give_the_same_files(seven_set, ckpt, estm_run, tmp_path):
    """--num_workers 0 (frames read in the loop) and the default 2 (read ahead in threads,
    datasets/prefetch.py) write the same predictions."""
    inline = eval_hybrid_seq.main(_estm_args(seven_set, ckpt, tmp_path, "--num_workers", "0"))
    ahead = {k: v for k, v in _tree(Path(estm_run["run_dir"])).items() if k.endswith(".npy")}
    here = {k: v for k, v in _tree(Path(inline["run_dir"])).items() if k.endswith(".npy")}
    assert len(ahead) > 0 and ahead.keys() == here.keys()
    assert all(ahead[k] == here[k] for k in ahead)
