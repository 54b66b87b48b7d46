"""demo.py --fuse: meshes of a held-out room from saved ESTM depths, scored by F-score."""

import demo
from datasets.scannet import ScanNetSequence
from datasets.synthetic.writer import generate
from evaluation.run_files import frame_stem
from utils.config import load_config
from utils.io import save_npy


def test_fuse_heldout_scores_exact_depth_above_wrong_depth(tmp_path):
    data = tmp_path / "data"
    generate(data, layout="scannet", scenes=1, frames=30, height=128, width=128, val=0, test=1,
             workers=1)
    args = load_config("demo", ["--out", str(tmp_path), "--height", "128", "--width", "128"])
    scene = (data / "splits" / "test_split.txt").read_text().split()[0]
    seq = ScanNetSequence(data / scene, height=128, width=128,
                          frame_interval=args.frame_interval,
                          depth_min=args.depth_min, depth_max=args.depth_max, intrinsics="scene")
    # "trained" saved the exact depth, "untrained" a depth 30% too far (ESTM: inner frames).
    for tag, factor in (("trained", 1.0), ("untrained", 1.3)):
        folder = tmp_path / "eval" / tag / "synthetic" / "estm" / scene / "refined_depth"
        for i in range(1, len(seq) - 1):
            depth = seq[i]["dmap"][0].numpy() * factor
            save_npy(depth, str(folder / f"{frame_stem(seq[i]['img_path'])}.npy"))
    result = demo.fuse_heldout(args, data)
    assert result["scene"] == scene
    assert result["trained"]["fscore"] > 0.95, result["trained"]
    assert result["untrained"]["fscore"] < 0.5 * result["trained"]["fscore"]
    for name in ("mesh_gt.ply", "mesh_trained.ply", "mesh_untrained.ply"):
        assert (tmp_path / name).is_file()
