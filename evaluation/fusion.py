"""TSDF fusion of posed depth maps, mesh extraction (PLY) and mesh metrics.

Fusion is a vectorised torch TSDF (Curless & Levoy; the KinectFusion update): every voxel
centre in a frame's frustum is projected into the depth map, its signed distance along the ray
``d(pixel) - z`` is truncated to ``[-trunc, trunc]`` and averaged with weight 1 per
observation. Voxels farther than ``trunc`` behind the observed surface are left untouched
(they are unknown, not empty). The mesh is scikit-image's marching cubes on the zero
level; faces touching a never-observed voxel are dropped so that the border of the seen
region does not produce a spurious surface.

Mesh metrics follow the 3D reconstruction literature (Atlas, NeuralRecon, SimpleRecon):
points sampled uniformly on both meshes; accuracy = mean distance from predicted to
ground-truth points, completeness = mean distance the other way, precision / recall =
fraction of those distances below a threshold (5 cm), F-score their harmonic mean.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from utils.geometry import backproject
from utils.io import atomic_open

F_SCORE_THRESHOLD = 0.05
# Voxel centres handled per step: bounds memory at about 100 MB of temporaries.
VOXEL_CHUNK = 1 << 21


@dataclass
class Mesh:
    """A triangle mesh: ``vertices_v3`` float32 world metres, ``faces_f3`` int64 indices."""

    vertices_v3: np.ndarray
    faces_f3: np.ndarray

    def __len__(self) -> int:
        return len(self.faces_f3)


class TSDFVolume:
    """A truncated signed distance volume over an axis-aligned box of the world.

    Args:
        origin: world coordinates (m) of the centre of voxel ``(0, 0, 0)``.
        dims: voxels along x, y, z.
        voxel_size: edge of a voxel (m).
        trunc: truncation distance (m); 3 voxels unless given.
    """

    def __init__(self, origin: Sequence[float], dims: Sequence[int], voxel_size: float,
                 trunc: Optional[float] = None, device="cpu"):
        self.device = torch.device(device)
        self.origin = torch.as_tensor(origin, dtype=torch.float32, device=self.device)
        self.dims = tuple(int(d) for d in dims)
        self.voxel_size = float(voxel_size)
        self.trunc = float(trunc) if trunc is not None else 3.0 * self.voxel_size
        count = self.dims[0] * self.dims[1] * self.dims[2]
        self.tsdf = torch.ones(count, dtype=torch.float32, device=self.device)
        self.weight = torch.zeros(count, dtype=torch.float32, device=self.device)

    @classmethod
    def from_bounds(cls, bounds_min: Sequence[float], bounds_max: Sequence[float],
                    voxel_size: float, trunc: Optional[float] = None, device="cpu",
                    max_voxels: int = 400 ** 3) -> "TSDFVolume":
        """A volume covering ``[bounds_min, bounds_max]`` plus one truncation band."""
        trunc = float(trunc) if trunc is not None else 3.0 * voxel_size
        low = np.asarray(bounds_min, dtype=np.float64) - trunc
        high = np.asarray(bounds_max, dtype=np.float64) + trunc
        dims = np.ceil((high - low) / voxel_size).astype(int) + 1
        if np.prod(dims) > max_voxels:
            raise ValueError(f"a {dims.tolist()} voxel volume ({voxel_size} m voxels over "
                             f"{(high - low).round(2).tolist()} m) exceeds {max_voxels} voxels; "
                             f"use a larger voxel size or a smaller maximum depth")
        return cls(low, dims, voxel_size, trunc, device)

    def _frustum_box(self, far: float, K, cam_T_world, height: int, width: int):
        """Voxel index ranges ``[(lo, hi)] * 3`` of the box around the camera's frustum up to
        depth ``far``: no voxel outside it can be updated (it projects outside the image,
        or lies more than the truncation behind every measurement)."""
        u = torch.tensor([-0.5, width - 0.5], dtype=torch.float64)
        v = torch.tensor([-0.5, height - 0.5], dtype=torch.float64)
        pix = torch.stack([u.repeat(2), v.repeat_interleave(2), torch.ones(4, dtype=u.dtype)])
        rays = torch.linalg.inv(K.double().cpu()) @ pix  # [3, 4], z = 1
        world_T_cam = torch.linalg.inv(cam_T_world.double().cpu())
        corners = torch.cat([torch.zeros(3, 1, dtype=u.dtype), rays * far], dim=1)
        world = world_T_cam[:3, :3] @ corners + world_T_cam[:3, 3:4]
        lo = (world.min(dim=1).values - self.origin.double().cpu()) / self.voxel_size
        hi = (world.max(dim=1).values - self.origin.double().cpu()) / self.voxel_size
        return [(max(0, int(np.floor(a)) - 1), min(n, int(np.ceil(b)) + 2))
                for a, b, n in zip(lo.tolist(), hi.tolist(), self.dims)]

    def _box_indices(self, box, x_start: int, x_stop: int) -> torch.Tensor:
        """Flat voxel indices (x-major) of the box's x-slab ``x_start..x_stop``."""
        (_, _), (y0, y1), (z0, z1) = box
        ny, nz = self.dims[1], self.dims[2]
        i = torch.arange(x_start, x_stop, device=self.device)
        j = torch.arange(y0, y1, device=self.device)
        k = torch.arange(z0, z1, device=self.device)
        return ((i[:, None, None] * ny + j[None, :, None]) * nz + k[None, None, :]).reshape(-1)

    def _voxel_centres(self, index: torch.Tensor) -> torch.Tensor:
        """World coordinates ``[n, 3]`` of flat voxel indices (x-major)."""
        ny, nz = self.dims[1], self.dims[2]
        ijk = torch.stack([index // (ny * nz), (index // nz) % ny, index % nz], dim=1)
        return self.origin + ijk.to(torch.float32) * self.voxel_size

    @torch.no_grad()
    def integrate(self, depth_hw, K_33, world_T_cam_44) -> None:
        """Fuse one depth map (metres, 0 or non-finite = no measurement)."""
        depth = torch.as_tensor(np.asarray(depth_hw, dtype=np.float32), device=self.device)
        K = torch.as_tensor(np.asarray(K_33, dtype=np.float32), device=self.device)
        cam_T_world = torch.linalg.inv(torch.as_tensor(
            np.asarray(world_T_cam_44, dtype=np.float64), device=self.device)).float()
        depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
        height, width = depth.shape
        if not (depth > 0).any():
            return
        box = self._frustum_box(float(depth.max()) + self.trunc, K, cam_T_world, height, width)
        if any(lo >= hi for lo, hi in box):
            return
        (x0, x1), (y0, y1), (z0, z1) = box
        slab = max(1, VOXEL_CHUNK // ((y1 - y0) * (z1 - z0)))
        for x_start in range(x0, x1, slab):
            index = self._box_indices(box, x_start, min(x_start + slab, x1))
            self._integrate_voxels(index, depth, K, cam_T_world)

    def _integrate_voxels(self, index, depth, K, cam_T_world) -> None:
        """The TSDF update of the voxels ``index`` from one depth map."""
        height, width = depth.shape
        points = self._voxel_centres(index) @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
        z = points[:, 2]
        uvw = points @ K.T
        front = z > 1e-6
        z_safe = torch.where(front, z, torch.ones_like(z))
        # Nearest pixel: the pixel whose centre (integer coordinate) is closest.
        u = torch.round(uvw[:, 0] / z_safe).long()
        v = torch.round(uvw[:, 1] / z_safe).long()
        inside = front & (u >= 0) & (u < width) & (v >= 0) & (v < height)
        measured = torch.zeros_like(z)
        measured[inside] = depth[v[inside], u[inside]]
        sdf = measured - z
        update = inside & (measured > 0) & (sdf >= -self.trunc)
        if not update.any():
            return
        index = index[update]
        value = torch.clamp(sdf[update] / self.trunc, max=1.0)
        weight = self.weight[index]
        self.tsdf[index] = (self.tsdf[index] * weight + value) / (weight + 1)
        self.weight[index] = weight + 1

    def grids(self) -> tuple[np.ndarray, np.ndarray]:
        """``(tsdf_xyz, weight_xyz)`` as numpy arrays of shape ``dims``."""
        return (self.tsdf.view(self.dims).cpu().numpy(),
                self.weight.view(self.dims).cpu().numpy())

    def extract_mesh(self) -> Mesh:
        """The zero level set as a triangle mesh in world coordinates (may be empty)."""
        from skimage.measure import marching_cubes  # only fusion needs scikit-image

        tsdf, weight = self.grids()
        observed = weight > 0
        if min(self.dims) < 2 or not (observed.any() and (tsdf[observed] < 0).any()
                                       and (tsdf[observed] > 0).any()):
            return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
        verts_ijk, faces, _, _ = marching_cubes(tsdf, level=0.0)
        # A vertex lies on an edge between two voxels; both must have been observed,
        # otherwise the "surface" is the border between seen and unknown space.
        low = np.floor(verts_ijk).astype(int)
        high = np.minimum(np.ceil(verts_ijk).astype(int), np.array(self.dims) - 1)
        good = observed[low[:, 0], low[:, 1], low[:, 2]] & observed[high[:, 0], high[:, 1],
                                                                    high[:, 2]]
        faces = faces[good[faces].all(axis=1)]
        used, faces = np.unique(faces, return_inverse=True)
        vertices = verts_ijk[used] * self.voxel_size + self.origin.cpu().numpy()
        return Mesh(vertices.astype(np.float32), faces.reshape(-1, 3).astype(np.int64))


# ------------------------------------------------------------------------ helpers
def depth_to_world_points(depth_hw, K_33, world_T_cam_44) -> np.ndarray:
    """World points ``[n, 3]`` of the valid (> 0, finite) pixels of a depth map."""
    depth = torch.as_tensor(np.asarray(depth_hw, dtype=np.float32))
    invK = torch.linalg.inv(torch.as_tensor(np.asarray(K_33, dtype=np.float64))).float()
    points = backproject(depth[None, None], invK[None])[0, :, 0].reshape(3, -1)
    valid = (torch.isfinite(depth) & (depth > 0)).reshape(-1)
    pose = torch.as_tensor(np.asarray(world_T_cam_44, dtype=np.float32))
    world = pose[:3, :3] @ points[:, valid] + pose[:3, 3:4]
    return world.T.numpy()


def fusion_bounds(frames, max_depth: float, percentile: float = 0.5) -> tuple:
    """An axis-aligned box around the valid points of ``(depth_hw, K_33, world_T_cam_44)``.

    Points beyond ``max_depth`` are ignored and the ``percentile`` % outliers on each side
    are cut, so a few wild depths do not blow up the volume.
    """
    clouds = []
    for depth, K, pose in frames:
        depth = np.where(np.asarray(depth) <= max_depth, depth, 0)
        points = depth_to_world_points(depth, K, pose)
        step = max(1, len(points) // 5000)  # a subsample is enough for the bounds
        clouds.append(points[::step])
    cloud = np.concatenate(clouds) if clouds else np.zeros((0, 3))
    if len(cloud) == 0:
        raise ValueError("no valid depth to fuse (every depth map is empty or beyond "
                         f"{max_depth} m)")
    return (np.percentile(cloud, percentile, axis=0),
            np.percentile(cloud, 100 - percentile, axis=0))


def fuse_depths(frames, voxel_size: float, max_depth: float, trunc: Optional[float] = None,
                device="cpu", bounds: Optional[tuple] = None,
                progress: bool = True) -> tuple[Mesh, TSDFVolume]:
    """Fuse ``(depth_hw, K_33, world_T_cam_44)`` frames; depths beyond ``max_depth`` ignored.
    Each frame updates only the voxels of its frustum's bounding box; ``progress``: a bar.

    Returns:
        (mesh, volume).
    """
    frames = list(frames)
    if bounds is None:
        bounds = fusion_bounds(frames, max_depth)
    volume = TSDFVolume.from_bounds(*bounds, voxel_size=voxel_size, trunc=trunc, device=device)
    for depth, K, pose in tqdm(frames, desc="fusion", unit="frame", disable=not progress,
                               dynamic_ncols=True):
        depth = np.asarray(depth, dtype=np.float32)
        volume.integrate(np.where(depth <= max_depth, depth, 0), K, pose)
    return volume.extract_mesh(), volume


# ---------------------------------------------------------------------------- PLY
def save_ply(mesh: Mesh, path) -> None:
    """Write a binary little-endian PLY (float32 x y z, int32 vertex indices), atomically."""
    header = ("ply\nformat binary_little_endian 1.0\ncomment estdepth TSDF fusion\n"
              f"element vertex {len(mesh.vertices_v3)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              f"element face {len(mesh.faces_f3)}\n"
              "property list uchar int vertex_indices\nend_header\n")
    faces = np.empty(len(mesh.faces_f3), dtype=[("n", "u1"), ("idx", "<i4", (3,))])
    faces["n"] = 3
    faces["idx"] = mesh.faces_f3
    with atomic_open(str(path), "wb") as f:
        f.write(header.encode("ascii"))
        f.write(np.ascontiguousarray(mesh.vertices_v3, dtype="<f4").tobytes())
        f.write(faces.tobytes())


# ------------------------------------------------------------------------- metrics
def sample_surface(mesh: Mesh, count: int, seed: int = 0) -> np.ndarray:
    """``count`` points ``[count, 3]`` uniform over the mesh's area (seeded)."""
    if len(mesh) == 0:
        return np.zeros((0, 3), np.float32)
    tri = mesh.vertices_v3[mesh.faces_f3].astype(np.float64)  # [f, 3, 3]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if area.sum() <= 0:
        return tri[:, 0].astype(np.float32)
    rng = np.random.default_rng(seed)
    face = rng.choice(len(tri), size=count, p=area / area.sum())
    r1, r2 = rng.random(count), rng.random(count)
    flip = r1 + r2 > 1  # reflect into the triangle: uniform barycentric coordinates
    r1, r2 = np.where(flip, 1 - r1, r1), np.where(flip, 1 - r2, r2)
    t = tri[face]
    points = t[:, 0] + r1[:, None] * (t[:, 1] - t[:, 0]) + r2[:, None] * (t[:, 2] - t[:, 0])
    return points.astype(np.float32)


def point_distances(from_n3: np.ndarray, to_m3: np.ndarray) -> np.ndarray:
    """Distance from each point of ``from_n3`` to its nearest point of ``to_m3``."""
    from scipy.spatial import cKDTree

    if len(to_m3) == 0:
        return np.full(len(from_n3), np.inf)
    # Sliding-midpoint splits: the default median splits are up to 10x slower on points
    # sampled from flat, axis-aligned surfaces (rooms), with identical results.
    tree = cKDTree(to_m3, balanced_tree=False, compact_nodes=False)
    return tree.query(from_n3, workers=1)[0]


def point_metrics(pred_n3: np.ndarray, gt_m3: np.ndarray,
                  threshold: float = F_SCORE_THRESHOLD) -> dict:
    """Accuracy, completeness (m), precision, recall and F-score of two point sets."""
    if len(gt_m3) == 0:
        raise ValueError("the ground-truth surface is empty")
    dist_pred = point_distances(pred_n3, gt_m3)  # accuracy direction
    dist_gt = point_distances(gt_m3, pred_n3)  # completeness direction
    precision = float((dist_pred < threshold).mean()) if len(pred_n3) else 0.0
    recall = float((dist_gt < threshold).mean())
    fscore = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"acc": float(dist_pred.mean()) if len(pred_n3) else float("inf"),
            "comp": float(dist_gt.mean()), "prec": precision, "recall": recall,
            "fscore": fscore, "threshold": threshold,
            "pred_points": int(len(pred_n3)), "gt_points": int(len(gt_m3))}


def mesh_metrics(pred: Mesh, gt: Mesh | np.ndarray, threshold: float = F_SCORE_THRESHOLD,
                 num_points: int = 100_000, seed: int = 0) -> dict:
    """:func:`point_metrics` of points sampled on ``pred`` and on ``gt`` (a mesh, or points
    on the true surface)."""
    gt_points = gt if isinstance(gt, np.ndarray) else sample_surface(gt, num_points, seed + 1)
    return point_metrics(sample_surface(pred, num_points, seed), gt_points, threshold)
