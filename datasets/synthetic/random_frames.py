"""Random frames on a known camera path: inputs for timings and numerical checks, where the
pixels do not matter but the geometry must be exact and repeatable."""

from __future__ import annotations

import torch

# Camera paths of the synthetic frames. "generic" (a slow turn about a skew axis and a
# drift) keeps every sample off the frustum's boundary, as real videos do. "sideways"
# (identity rotation, x translation: the first GPU training figures' window) puts whole EST
# planes, and the top and bottom rows, exactly on it (utils.geometry.BOUNDARY_SLACK): kept to
# check that compiled and eager code decide those samples alike.
CAMERAS = ("generic", "sideways")


def camera_pose(i: int, camera: str = "generic") -> torch.Tensor:
    """Camera-to-world pose ``[4, 4]`` of frame ``i`` on a :data:`CAMERAS` path."""
    if camera not in CAMERAS:
        raise ValueError(f"camera must be one of {', '.join(CAMERAS)}, got {camera!r}")
    pose = torch.eye(4, dtype=torch.float64)
    if camera == "sideways":
        pose[0, 3] = 0.05 * i
        return pose.float()
    axis = torch.tensor([0.3, 1.0, 0.2], dtype=torch.float64)
    axis = axis / axis.norm()
    cross = torch.tensor([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]],
                          [-axis[1], axis[0], 0]], dtype=torch.float64)
    angle = torch.tensor(0.02 * i, dtype=torch.float64)  # Rodrigues' rotation formula
    pose[:3, :3] += torch.sin(angle) * cross + (1 - torch.cos(angle)) * cross @ cross
    pose[:3, 3] = torch.tensor([0.05, 0.012, 0.018], dtype=torch.float64) * i
    return pose.float()


class RandomSequence:
    """A sequence of ``n`` frames, each made on demand (nothing kept per frame), in the
    layout of :class:`datasets.sequence.PosedSequence` items: random images on a
    :data:`CAMERAS` path."""

    def __init__(self, n: int, height: int, width: int, seed: int = 0,
                 camera: str = "generic"):
        self.n, self.height, self.width, self.seed = n, height, width, seed
        self.camera = camera
        self.K = torch.tensor([[0.9 * width, 0, width / 2 - 0.5],
                               [0, 0.9 * width, height / 2 - 0.5], [0, 0, 1.0]])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        return {"img": torch.rand(3, self.height, self.width, generator=g) * 255,
                "cam_pose": camera_pose(i, self.camera), "cam_intr": self.K.clone(),
                "dmap": None, "dmask": None, "img_path": f"{i}.jpg", "frame_id": i}



def random_window(frames: int, height: int, width: int, device, camera: str = "generic"):
    """A training window: random images on a :data:`CAMERAS` path, random depth."""
    seq = RandomSequence(frames, height, width, camera=camera)
    items = [seq[i] for i in range(frames)]
    imgs = torch.stack([it["img"] for it in items])[None].to(device)
    poses = torch.stack([it["cam_pose"] for it in items])[None].to(device)
    # Drawn on the CPU from its own generator: every run sees the same window whatever else
    # drew from the device's global generator (runs compare their losses).
    g = torch.Generator().manual_seed(0)
    depth = (1 + 3 * torch.rand(1, frames, 1, height, width, generator=g)).to(device)
    return imgs, poses, seq.K[None].to(device), {"dmaps": depth, "dmasks": depth > 0}
