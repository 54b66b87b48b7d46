"""predict.py over several captures (evaluation/prediction.py): each capture's files are
those of a run of it alone, batched or not, and runs resume across batch sizes."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import predict
from evaluation import inference_loop
from tests.test_predict import TINY, as_folder_capture

# The PNGs hold millimetres, and a batch of several sequences may round a depth to the
# other millimetre than one alone (depths measured within 1e-6 m before rounding): at most
# 1 mm apart, and on at most 1% of the pixels.
PNG_TOLERANCE_MM, ROUNDED_APART = 1, 0.01


def _captures(redkitchen, root: Path) -> list[Path]:
    """Three folder captures of ragged lengths (7, 4 and 5 frames at interval 5); two share
    the folder name ``cap`` under different parents."""
    spans = {"kitchen/a/cap": range(150, 185), "kitchen/b/cap": range(160, 180),
             "kitchen/c": range(175, 200)}
    return [as_folder_capture(redkitchen, root / name, frames=frames)
            for name, frames in spans.items()]


def _argv(inputs, out, *extra) -> list:
    return (["--input", *map(str, inputs), "--output", str(out), "--frame_interval", "5",
             "--fuse", "False", "--save_images", "False"] + TINY + list(extra))


def _depths(folder: Path) -> dict:
    return {png.stem: cv2.imread(str(png), cv2.IMREAD_UNCHANGED).astype(np.int64)
            for png in sorted((folder / "depth").glob("*.png"))}


@pytest.mark.slow
def test_several_captures_in_one_batch_write_what_each_alone_writes(redkitchen, tmp_path,
                                                                    monkeypatch):
    captures = _captures(redkitchen, tmp_path / "in")
    alone = [predict.main(_argv([c], tmp_path / "alone" / str(k))) for k, c in
             enumerate(captures)]

    batch_sizes = []
    decode = inference_loop.decode_batch

    def counting(model, caches, *args):
        batch_sizes.append(len(caches))
        return decode(model, caches, *args)

    monkeypatch.setattr(inference_loop, "decode_batch", counting)
    out = tmp_path / "together"
    together = predict.main(_argv(captures, out, "--batch_sequences", "3"))["captures"]
    assert max(batch_sizes) == 3  # the three captures did run as one batch
    # each capture's folder: its path below the captures' common folder
    folders = [out / "a" / "cap", out / "b" / "cap", out / "c"]
    for k, (single, joint, folder) in enumerate(zip(alone, together, folders)):
        assert json.loads((folder / "summary.json").read_text())["frames"] == joint["frames"]
        assert joint["frames"] == single["frames"] and len(joint["frames"]) >= 2
        assert joint["config_hash"] == single["config_hash"]
        ours, theirs = _depths(folder), _depths(tmp_path / "alone" / str(k))
        assert list(ours) == list(theirs) == single["frames"]
        for stem in ours:
            apart = np.abs(ours[stem] - theirs[stem])
            assert apart.max() <= PNG_TOLERANCE_MM and (apart > 0).mean() <= ROUNDED_APART, stem

    # Resume: a capture whose depths are gone is the only one predicted again, at
    # another batch size; the others are reused.
    (folders[1] / predict.DEPTH_DONE).unlink()
    predicted = []
    run = predict.predict_captures
    monkeypatch.setattr(predict, "predict_captures",
                        lambda model, args, protocol, todo, rw: predicted.extend(
                            c.out for c in todo) or run(model, args, protocol, todo, rw))
    again = predict.main(_argv(captures, out, "--batch_sequences", "2"))["captures"]
    assert predicted == [folders[1]]
    assert [s["frames"] for s in again] == [s["frames"] for s in together]
    # and a run of one capture alone reuses what the batched run wrote
    monkeypatch.setattr(predict, "predict_captures", None)
    assert predict.main(_argv([captures[2]], folders[2]))["frames"] == together[2]["frames"]


def test_output_folders_follow_the_captures_paths(tmp_path):
    one = predict.output_folders("out", [str(tmp_path / "x" / "cap")])
    assert one == [Path("out")]
    (tmp_path / "x" / "cap").mkdir(parents=True)
    (tmp_path / "y" / "cap").mkdir(parents=True)
    several = predict.output_folders("out", [str(tmp_path / "x" / "cap"),
                                             str(tmp_path / "y" / "cap")])
    assert several == [Path("out/x/cap"), Path("out/y/cap")]


@pytest.mark.parametrize("second, message", [("x/cap", "is --input"),
                                             ("x/cap/images", "lies inside --input")])
def test_a_capture_given_twice_or_inside_another_is_refused(tmp_path, second, message):
    (tmp_path / "x" / "cap" / "images").mkdir(parents=True)
    with pytest.raises(ValueError, match=message):
        predict.main(_argv([tmp_path / "x" / "cap", tmp_path / second], tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_options_several_captures_cannot_take_are_refused(tmp_path):
    inputs = [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(ValueError, match="--stream follows one capture, got 2"):
        predict.main(_argv(inputs, tmp_path / "out", "--stream", "True"))
    with pytest.raises(ValueError, match="--batch_sequences above 1 needs --backend eager"):
        predict.main(_argv(inputs, tmp_path / "out", "--backend", "onnxruntime",
                           "--batch_sequences", "2"))
