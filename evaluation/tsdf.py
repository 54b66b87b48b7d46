"""TSDF volumes on one world voxel grid: a fixed box (:class:`TSDFVolume`) and one that
grows with the frames a stream brings (:class:`GrowingTSDF`).

The update is the vectorised KinectFusion one (see :mod:`evaluation.fusion`). Voxel
centres are integer multiples of the voxel size in world coordinates and every voxel's
arithmetic is element-wise, so a voxel's value depends only on the frames, never on the
box a volume covers or the order voxels are visited in; the mesh is extracted from the
observed voxels alone (:meth:`TSDFVolume.extract_mesh`). Hence a volume that grows frame
by frame gives bit for bit the mesh of one allocated with the final box from the start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import torch

# Voxel centres handled per step: bounds memory at about 100 MB of temporaries.
VOXEL_CHUNK = 1 << 21
MAX_VOXELS = 400 ** 3


@dataclass
class Mesh:
    """A triangle mesh: ``vertices_v3`` float32 world metres, ``faces_f3`` int64 indices."""

    vertices_v3: np.ndarray
    faces_f3: np.ndarray

    def __len__(self) -> int:
        return len(self.faces_f3)


class TSDFVolume:
    """A truncated signed distance volume over an axis-aligned box of the world.

    Voxel centres lie on one world grid, ``k * voxel_size`` for integer ``k`` per axis,
    whatever box a volume covers: two volumes over different boxes compute bit-identical
    values for the voxels both hold (a growing stream volume equals one allocated with
    the final bounds from the start, see :class:`GrowingTSDF`).

    Args:
        origin: world coordinates (m) of the centre of voxel ``(0, 0, 0)``, rounded to the
            nearest multiple of ``voxel_size``.
        dims: voxels along x, y, z.
        voxel_size: edge of a voxel (m).
        trunc: truncation distance (m); 3 voxels unless given.
    """

    def __init__(self, origin: Sequence[float], dims: Sequence[int], voxel_size: float,
                 trunc: Optional[float] = None, device="cpu"):
        self.device = torch.device(device)
        self.voxel_size = float(voxel_size)
        # the grid index of voxel (0, 0, 0); centres are computed from global indices
        self.origin_ijk = np.rint(np.asarray(origin, dtype=np.float64)
                                  / self.voxel_size).astype(np.int64)
        self.origin = torch.as_tensor(self.origin_ijk * self.voxel_size, dtype=torch.float32,
                                      device=self.device)
        self.dims = tuple(int(d) for d in dims)
        self.trunc = float(trunc) if trunc is not None else 3.0 * self.voxel_size
        count = self.dims[0] * self.dims[1] * self.dims[2]
        self.tsdf = torch.ones(count, dtype=torch.float32, device=self.device)
        self.weight = torch.zeros(count, dtype=torch.float32, device=self.device)

    @classmethod
    def from_bounds(cls, bounds_min: Sequence[float], bounds_max: Sequence[float],
                    voxel_size: float, trunc: Optional[float] = None, device="cpu",
                    max_voxels: int = MAX_VOXELS) -> "TSDFVolume":
        """A volume covering ``[bounds_min, bounds_max]`` plus one truncation band."""
        trunc = float(trunc) if trunc is not None else 3.0 * voxel_size
        low = np.floor((np.asarray(bounds_min, dtype=np.float64) - trunc) / voxel_size)
        high = np.ceil((np.asarray(bounds_max, dtype=np.float64) + trunc) / voxel_size)
        dims = (high - low).astype(int) + 1
        check_volume_size(dims, voxel_size, max_voxels)
        return cls(low * voxel_size, dims, voxel_size, trunc, device)

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
        # from the global grid index: the same float32 centre in every volume
        ijk = ijk + torch.as_tensor(self.origin_ijk, device=self.device)
        return ijk.to(torch.float32) * self.voxel_size

    @torch.no_grad()
    def integrate(self, depth_hw, K_33, world_T_cam_44) -> None:
        """Fuse one depth map (metres, 0 or non-finite = no measurement)."""
        frame = prepare_frame(depth_hw, K_33, world_T_cam_44, self.trunc, self.voxel_size,
                              self.device)
        if frame is not None:
            self.integrate_prepared(*frame)

    @torch.no_grad()
    def integrate_prepared(self, depth, K, cam_T_world, grid_box) -> None:
        """Fuse a frame of :func:`prepare_frame` (its voxels inside this volume only)."""
        box = [(max(0, lo - o), min(n, hi - o))
               for (lo, hi), o, n in zip(grid_box, self.origin_ijk.tolist(), self.dims)]
        if any(lo >= hi for lo, hi in box):
            return
        (x0, x1), (y0, y1), (z0, z1) = box
        slab = max(1, VOXEL_CHUNK // ((y1 - y0) * (z1 - z0)))
        for x_start in range(x0, x1, slab):
            index = self._box_indices(box, x_start, min(x_start + slab, x1))
            self._integrate_voxels(index, depth, K, cam_T_world)

    def _integrate_voxels(self, index, depth, K, cam_T_world) -> None:
        """The TSDF update of the voxels ``index`` from one depth map.

        Element-wise arithmetic, not matrix products: a voxel's value must not depend on
        how many voxels are handled with it (BLAS kernels may round a row differently in
        another block size), so that volumes over different boxes agree bit for bit.
        """
        height, width = depth.shape
        centres = self._voxel_centres(index)
        x, y, z = (centres[:, 0] * cam_T_world[r, 0] + centres[:, 1] * cam_T_world[r, 1]
                   + centres[:, 2] * cam_T_world[r, 2] + cam_T_world[r, 3] for r in range(3))
        front = z > 1e-6
        z_safe = torch.where(front, z, torch.ones_like(z))
        # Nearest pixel: the pixel whose centre (integer coordinate) is closest.
        u = torch.round((x * K[0, 0] + y * K[0, 1] + z * K[0, 2]) / z_safe).long()
        v = torch.round((x * K[1, 0] + y * K[1, 1] + z * K[1, 2]) / z_safe).long()
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
        """The zero level set as a triangle mesh in world coordinates (may be empty).

        Marching cubes runs on the box of the observed voxels widened by one voxel on
        every side (padded with unobserved voxels where the volume ends): every cube with
        an observed corner, and nothing that depends on how far the volume extends, so
        two volumes holding the same observed voxels give the same mesh, bit for bit.
        """
        from skimage.measure import marching_cubes  # only fusion needs scikit-image

        tsdf, weight = self.grids()
        observed = weight > 0
        if not (observed.any() and (tsdf[observed] < 0).any() and (tsdf[observed] > 0).any()):
            return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
        tsdf, observed, low = observed_crop(tsdf, observed)
        verts_ijk, faces, _, _ = marching_cubes(tsdf, level=0.0)
        # A vertex lies on an edge between two voxels; both must have been observed,
        # otherwise the "surface" is the border between seen and unknown space.
        lo = np.floor(verts_ijk).astype(int)
        hi = np.minimum(np.ceil(verts_ijk).astype(int), np.array(tsdf.shape) - 1)
        good = observed[lo[:, 0], lo[:, 1], lo[:, 2]] & observed[hi[:, 0], hi[:, 1], hi[:, 2]]
        faces = faces[good[faces].all(axis=1)]
        used, faces = np.unique(faces, return_inverse=True)
        vertices = (verts_ijk[used].astype(np.float64) + (low + self.origin_ijk)) \
            * self.voxel_size
        return Mesh(vertices.astype(np.float32), faces.reshape(-1, 3).astype(np.int64))


# ------------------------------------------------------------------------ helpers
def check_volume_size(dims, voxel_size: float, max_voxels: int = MAX_VOXELS) -> None:
    """Refuse a volume of more than ``max_voxels`` voxels (dense float32 grids)."""
    dims = np.asarray(dims)
    if np.prod(dims.astype(np.float64)) > max_voxels:
        raise ValueError(f"a {dims.tolist()} voxel volume ({voxel_size} m voxels over "
                         f"{(dims * voxel_size).round(2).tolist()} m) exceeds {max_voxels} "
                         f"voxels; use a larger voxel size or a smaller maximum depth")


def observed_crop(tsdf_xyz: np.ndarray, observed_xyz: np.ndarray):
    """``(tsdf, observed, low)``: the box of the observed voxels widened by one voxel per
    side, padded with unobserved voxels (tsdf 1) past the grid; ``low`` [3] its first
    voxel's index in the grid (may be -1)."""
    low, high = [], []
    for axis in range(3):
        hit = np.flatnonzero(observed_xyz.any(axis=tuple(a for a in range(3) if a != axis)))
        low.append(hit[0] - 1)
        high.append(hit[-1] + 2)
    low, high = np.array(low), np.array(high)
    inner = tuple(slice(max(0, lo), min(n, hi))
                  for lo, hi, n in zip(low, high, tsdf_xyz.shape))
    pad = [(max(0, -lo), max(0, hi - n)) for lo, hi, n in zip(low, high, tsdf_xyz.shape)]
    return (np.pad(tsdf_xyz[inner], pad, constant_values=1.0),
            np.pad(observed_xyz[inner], pad, constant_values=False), low)


def frustum_grid_box(far: float, K, cam_T_world, height: int, width: int,
                     voxel_size: float) -> list:
    """Global grid index ranges ``[(lo, hi)] * 3`` of the box around a camera's frustum up
    to depth ``far`` (m): no voxel outside it can be updated (it projects outside the
    image, or lies more than the truncation behind every measurement)."""
    u = torch.tensor([-0.5, width - 0.5], dtype=torch.float64)
    v = torch.tensor([-0.5, height - 0.5], dtype=torch.float64)
    pix = torch.stack([u.repeat(2), v.repeat_interleave(2), torch.ones(4, dtype=u.dtype)])
    rays = torch.linalg.inv(K.double().cpu()) @ pix  # [3, 4], z = 1
    world_T_cam = torch.linalg.inv(cam_T_world.double().cpu())
    corners = torch.cat([torch.zeros(3, 1, dtype=u.dtype), rays * far], dim=1)
    world = world_T_cam[:3, :3] @ corners + world_T_cam[:3, 3:4]
    lo = world.min(dim=1).values / voxel_size
    hi = world.max(dim=1).values / voxel_size
    return [(int(np.floor(a)) - 1, int(np.ceil(b)) + 2) for a, b in zip(lo.tolist(), hi.tolist())]


def prepare_frame(depth_hw, K_33, world_T_cam_44, trunc: float, voxel_size: float,
                  device) -> Optional[tuple]:
    """``(depth, K, cam_T_world, grid_box)`` as the update takes them (torch, float32;
    non-finite depths zeroed), or None for a frame without a valid depth."""
    depth = torch.as_tensor(np.asarray(depth_hw, dtype=np.float32), device=device)
    K = torch.as_tensor(np.asarray(K_33, dtype=np.float32), device=device)
    cam_T_world = torch.linalg.inv(torch.as_tensor(
        np.asarray(world_T_cam_44, dtype=np.float64), device=device)).float()
    depth = torch.where(torch.isfinite(depth), depth, torch.zeros_like(depth))
    if not (depth > 0).any():
        return None
    height, width = depth.shape
    box = frustum_grid_box(float(depth.max()) + trunc, K, cam_T_world, height, width,
                           voxel_size)
    return depth, K, cam_T_world, box


class GrowingTSDF:
    """A :class:`TSDFVolume` that grows to hold each new frame's frustum box.

    A stream cannot know the scene's bounds in advance: when a frame's box leaves the
    volume, a larger one (the union, widened by a quarter on the sides that grew, at
    least ``GROW_VOXELS``) is allocated and the fused values copied into it. Voxel values
    and the mesh equal those of one volume allocated with the final box from the start.

    Args:
        max_depth: depths beyond it (m) are not fused.
        max_voxels: a volume larger than this is refused (ValueError) when it would grow.
    """

    GROW_VOXELS = 8

    def __init__(self, voxel_size: float, max_depth: float, trunc: Optional[float] = None,
                 device="cpu", max_voxels: int = MAX_VOXELS):
        self.voxel_size, self.max_depth = float(voxel_size), float(max_depth)
        self.trunc = float(trunc) if trunc is not None else 3.0 * self.voxel_size
        self.device, self.max_voxels = torch.device(device), max_voxels
        self.volume: Optional[TSDFVolume] = None
        self.frames = 0  # frames integrated (empty ones included)
        self.grown = 0  # re-allocations

    @torch.no_grad()
    def integrate(self, depth_hw, K_33, world_T_cam_44) -> None:
        """Fuse one depth map (metres; 0, non-finite or beyond ``max_depth``: none)."""
        depth = np.asarray(depth_hw, dtype=np.float32)
        frame = prepare_frame(np.where(depth <= self.max_depth, depth, 0), K_33,
                              world_T_cam_44, self.trunc, self.voxel_size, self.device)
        self.frames += 1
        if frame is None:
            return
        self._cover(frame[3])
        self.volume.integrate_prepared(*frame)

    def _cover(self, grid_box: list) -> None:
        """Grow the volume (copying its values) until it holds ``grid_box``."""
        lo = np.array([a for a, _ in grid_box])
        hi = np.array([b for _, b in grid_box])
        old = self.volume
        if old is not None:
            old_lo = old.origin_ijk
            old_hi = old_lo + np.array(old.dims)
            if (lo >= old_lo).all() and (hi <= old_hi).all():
                return
            extent = old_hi - old_lo
            widen = np.maximum(self.GROW_VOXELS, extent // 4)
            lo = np.where(lo < old_lo, np.minimum(lo, old_lo - widen), old_lo)
            hi = np.where(hi > old_hi, np.maximum(hi, old_hi + widen), old_hi)
        check_volume_size(hi - lo, self.voxel_size, self.max_voxels)
        volume = TSDFVolume(lo * self.voxel_size, hi - lo, self.voxel_size, self.trunc,
                            self.device)
        if old is not None:
            at = old.origin_ijk - lo
            inner = tuple(slice(a, a + n) for a, n in zip(at.tolist(), old.dims))
            volume.tsdf.view(volume.dims)[inner] = old.tsdf.view(old.dims)
            volume.weight.view(volume.dims)[inner] = old.weight.view(old.dims)
            self.grown += 1
        self.volume = volume

    def extract_mesh(self) -> Mesh:
        """The mesh of everything fused so far (empty before any valid depth)."""
        if self.volume is None:
            return Mesh(np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64))
        return self.volume.extract_mesh()
