"""export.py and predict.py --backend onnxruntime: the exported graphs compute what the
eager inference copy computes, on real frames, and the export is all or nothing."""

import json

import numpy as np
import pytest
import torch

import export
import predict
from datasets.captures import open_capture
from datasets.io import read_depth
from evaluation.inference_loop import infer_windows
from evaluation.protocols import estm_protocol
from models.depthnet import DepthNetHybrid
from models.inference import prepare_for_inference
from models.memory import MemoryBuffer
from models.onnx_runtime import OnnxModel, read_manifest
from tests.test_predict import TINY, as_folder_capture
from utils.options import ModelOptions

pytest.importorskip("onnxruntime")
MODEL = ["--resnet", "18", "--ndepths", "4", "--depth_min", "0.5", "--depth_max", "6",
         "--height", "128", "--width", "128", "--log_level", "WARNING"]
TOLERANCE_M = 1e-3  # the bound on scale-0 depth; measured: 5e-7 m


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A random-weight tiny model's ESTM graphs with up to one memory view (~2 min)."""
    out = tmp_path_factory.mktemp("export") / "tiny"
    manifest = export.main(MODEL + ["--modes", "estm", "--memory_size", "1",
                                    "--output", str(out), "--seed", "7"])
    return out, manifest


def eager_model(seed: int = 7):
    torch.manual_seed(seed)
    opts = ModelOptions(resnet=18, ndepths=4, depth_min=0.5, depth_max=6.0)
    return prepare_for_inference(DepthNetHybrid.from_options(opts))


def scale0_depths(model, seq, protocol, with_memory: bool = True) -> list:
    memory = MemoryBuffer(protocol.memory_size) if with_memory else None
    return [outputs[("depth", t, 0)][0, 0].numpy().copy()
            for window, _, outputs in infer_windows(model, seq, protocol.windows(len(seq)),
                                                    memory)
            for t, _ in protocol.targets(window)]


@pytest.mark.slow
def test_the_export_is_complete_and_checked(exported):
    out, manifest = exported
    assert read_manifest(out) == json.loads(json.dumps(manifest))
    graphs = manifest["graphs"]
    assert graphs["decode"] == {"estm": {"frames": 3, "memory": {
        "0": "estm_decode_m0.onnx", "1": "estm_decode_m1.onnx"}}}
    names = {graphs["matching"], graphs["context"], "estm_decode_m0.onnx",
             "estm_decode_m1.onnx", "manifest.json"}
    assert {p.name for p in out.iterdir()} == names  # no .pt2 unless asked, nothing else
    assert not list(out.parent.glob(".tiny.partial-*"))
    assert manifest["random_weights"] and manifest["seed"] == 7
    assert (manifest["height"], manifest["width"]) == (128, 128)
    assert 0 <= manifest["max_depth_error_m"] < TOLERANCE_M


@pytest.mark.slow
def test_onnxruntime_matches_eager_on_real_frames(exported, redkitchen):
    """ESTM over 20 real 7-Scenes frames: the memory threads through both the same way."""
    out, _ = exported
    seq = open_capture(redkitchen, "auto", 128, 128, frame_interval=2)
    protocol = estm_protocol(3, 1)
    eager = scale0_depths(eager_model(), seq, protocol)
    onnx = scale0_depths(OnnxModel(out, "estm", "cpu", threads=1), seq, protocol)
    assert len(onnx) == len(eager) == len(seq) - 2
    worst = max(float(np.abs(a - b).max()) for a, b in zip(eager, onnx))
    assert worst < TOLERANCE_M
    # the memory graphs ran: without memory every window after the first differs
    alone = scale0_depths(OnnxModel(out, "estm", "cpu"), seq, protocol, with_memory=False)
    assert np.array_equal(alone[0], onnx[0]) and not np.allclose(alone[-1], onnx[-1])


@pytest.mark.slow
def test_predict_with_onnxruntime_writes_the_eager_depths(exported, redkitchen, tmp_path):
    out, _ = exported
    capture = as_folder_capture(redkitchen, tmp_path / "capture", frames=range(150, 170))
    common = ["--input", str(capture), "--frame_interval", "2", "--memory_size", "1",
              "--fuse", "False", "--save_images", "False", "--log_level", "WARNING"]
    onnx = predict.main(common + ["--output", str(tmp_path / "onnx"), "--backend",
                                  "onnxruntime", "--onnx", str(out)])
    eager = predict.main(common + ["--output", str(tmp_path / "eager"), "--seed", "7"] +
                         TINY[:-2])
    assert onnx["frames"] == eager["frames"] and len(onnx["frames"]) == 8
    assert onnx["hashed"]["backend"] == "onnxruntime" and onnx["random_weights"]
    assert onnx["config_hash"] != eager["config_hash"]
    for stem in onnx["frames"]:
        a, b = (read_depth(tmp_path / run / "depth" / f"{stem}.png")
                for run in ("onnx", "eager"))
        assert np.abs(a - b).max() <= 0.001 + 1e-6  # one millimetre step at most


@pytest.mark.slow
def test_predict_refuses_what_the_export_cannot_run(exported, redkitchen, tmp_path):
    out, _ = exported
    capture = as_folder_capture(redkitchen, tmp_path / "capture", frames=range(150, 160))
    argv = ["--input", str(capture), "--output", str(tmp_path / "o"), "--backend",
            "onnxruntime", "--onnx", str(out), "--memory_size", "1", "--fuse", "False"]
    with pytest.raises(ValueError, match="differs from the export's 128"):
        predict.main(argv + ["--height", "256"])
    with pytest.raises(ValueError, match="2 memory views"):
        predict.main(argv + ["--memory_size", "2"])
    with pytest.raises(ValueError, match="no joint graphs"):
        predict.main(argv + ["--mode", "joint"])
    with pytest.raises(ValueError, match="holds the weights"):
        predict.main(argv + ["--loadckpt", str(out / "manifest.json")])


def test_predict_onnxruntime_needs_an_export(tmp_path, redkitchen):
    capture = as_folder_capture(redkitchen, tmp_path / "capture", frames=range(150, 160))
    argv = ["--input", str(capture), "--output", str(tmp_path / "o"), "--backend",
            "onnxruntime"]
    with pytest.raises(ValueError, match="needs --onnx"):
        predict.main(argv)
    with pytest.raises(FileNotFoundError, match="not a folder written by export.py"):
        predict.main(argv + ["--onnx", str(tmp_path)])
    with pytest.raises(ValueError, match="--backend must be eager or onnxruntime"):
        predict.main(argv[:-2] + ["--backend", "tensorrt"])


def test_an_export_never_leaves_a_partial_folder(tmp_path, monkeypatch):
    """A failure leaves neither the output nor the temporary; an existing export is kept
    unless --overwrite."""
    def failing(model, folder, args, kinds):
        (folder / "matching.onnx").write_bytes(b"half")
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "export_graphs", failing)
    out = tmp_path / "model"
    with pytest.raises(RuntimeError, match="disk full"):
        export.main(MODEL + ["--output", str(out)])
    assert not out.exists() and list(tmp_path.iterdir()) == []

    out.mkdir()
    (out / "manifest.json").write_text("{}")
    with pytest.raises(FileExistsError, match="--overwrite"):
        export.main(MODEL + ["--output", str(out)])
    assert (out / "manifest.json").read_text() == "{}"


def test_an_export_further_than_the_bound_from_eager_is_refused(tmp_path, monkeypatch):
    def part(part, args, folder, name, input_names, output_names, torch_export):
        error = 2e-3 if name == "estm_decode_m1" else 1e-6
        return {"onnx": f"{name}.onnx", "max_abs_error": {"depth": error}}

    monkeypatch.setattr(export, "export_part", part)
    with pytest.raises(RuntimeError, match="2.00e-03 m"):
        export.main(MODEL + ["--output", str(tmp_path / "m"), "--modes", "estm",
                             "--memory_size", "1"])
    assert not (tmp_path / "m").exists()


@pytest.mark.parametrize("modes", ["", "estm,stereo"])
def test_export_refuses_unknown_window_kinds(tmp_path, modes):
    with pytest.raises(ValueError, match="--modes"):
        export.main(MODEL + ["--output", str(tmp_path / "m"), "--modes", modes])
