"""Pinhole-camera geometry: back-projection, projection, plane-sweep and volume warping.

Conventions used everywhere in this project:

* Poses are 4x4 rigid transforms named ``a_T_b``: they map points from frame ``b`` into
  frame ``a``. Datasets store ``world_T_cam`` (camera-to-world).
* Pixel ``(x, y)`` is the centre of column ``x`` and row ``y``; normalised sampling
  coordinates divide by ``size - 1`` and every ``grid_sample`` passes
  ``align_corners=True``. The released ESTDepth weights were trained under that
  convention (PyTorch 1.2's only behaviour); the modern default shifts samples.
* Every function is batch-agnostic (nothing is cached with a batch size), works for any
  device and floating dtype, and documents its shapes in the argument names
  (``depth_b1hw`` is ``[B, 1, H, W]``).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

# Added to the projected depth before dividing, as the official code does, so that a
# point on the camera plane does not produce inf/nan coordinates.
PROJECTION_EPS = 1e-10
# Sampling coordinate for "outside": far enough out that bilinear/trilinear sampling with
# zero padding returns exactly 0 instead of blending with the border.
OUTSIDE = 2.0
# A plane sweep puts samples on the image border (and on the outermost planes), where the
# outside test decides between a sample and 0. In float32 that decision follows the
# device's rounding: on the official fixture one sample is outside on the CPU and inside on
# CUDA, and a depth moves by 0.15 m. The warps therefore decide inside/outside from the
# same coordinates computed in this dtype (from the poses on), where every device gives the
# same answer (the official CPU one on the fixture); where a sample lands is still computed
# in float32 as the official does.
COORD_DTYPE = torch.float64
# A sample this close beyond the boundary (grid units, -1..1) counts as inside. Exact
# geometry puts samples exactly on it: a camera that stands still, or moves sideways without
# turning, puts whole rows, columns and EST planes at exactly +-1, where the decision follows
# the coordinate's last bit, and two correct evaluations disagree (eager code, and kernels
# that fuse multiply-adds, such as torch.compile's, an ulp apart: 3.5e-4 of a training
# loss). Far below float32's resolution (6e-8), so the float64 decisions still take the
# official float32 ones wherever those are decided by more than rounding (no float64
# coordinate lies this close outside on the official fixture or the real 7-Scenes frames).
BOUNDARY_SLACK = 1e-9


def full_precision(fn):
    """Run ``fn`` with autocast off: pixel coordinates need float32 even in mixed precision."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cuda", enabled=False), torch.autocast("cpu", enabled=False):
            return fn(*args, **kwargs)
    return wrapper


def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Homogeneous pixel coordinates ``(x, y, 1)`` of an image, row-major.

    Returns:
        pix_3n: ``[3, H*W]``.
    """
    y, x = torch.meshgrid(torch.arange(height, device=device, dtype=dtype),
                          torch.arange(width, device=device, dtype=dtype), indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1), torch.ones_like(x).reshape(-1)])


def scale_intrinsics(K_b33: torch.Tensor, scale: float) -> torch.Tensor:
    """Intrinsics of an image resized by ``scale``: rows 0 and 1 multiplied (fx, fy, cx, cy).

    This is the official convention (cx scales as ``cx * s``, not ``(cx + 0.5) * s - 0.5``).
    """
    K = K_b33.clone()
    K[..., :2, :] = K[..., :2, :] * scale
    return K


@full_precision
def relative_pose(world_T_a_b44: torch.Tensor, world_T_b_b44: torch.Tensor) -> torch.Tensor:
    """``b_T_a``: the transform taking points of camera ``a`` into camera ``b``."""
    # inv_ex everywhere: linalg.inv's singularity check would make the host wait for a
    # GPU (inputs are checked on the host before they reach the device).
    return torch.linalg.inv_ex(world_T_b_b44).inverse @ world_T_a_b44


@full_precision
def adjugate_inverse(m_bnn: torch.Tensor) -> torch.Tensor:
    """The inverse ``[..., n, n]`` of 3x3 or 4x4 matrices ``[..., n, n]`` as ``adj(m) / det(m)``.

    Elementwise arithmetic only (an exported graph's matrix inverse: ONNX has none, see
    models/export.py); for the well-conditioned poses and intrinsics of this project it
    agrees with ``torch.linalg.inv`` to float rounding. Singular input gives inf/nan.
    """
    n = m_bnn.shape[-1]
    if m_bnn.shape[-2:] not in ((3, 3), (4, 4)):
        raise ValueError(f"adjugate_inverse takes 3x3 or 4x4 matrices, got {list(m_bnn.shape)}")
    a = [[m_bnn[..., i, j] for j in range(n)] for i in range(n)]
    cof = _cofactors_3x3(a) if n == 3 else _cofactors_4x4(a)
    det = sum(a[0][j] * cof[0][j] for j in range(n))
    adj = torch.stack([torch.stack([cof[j][i] for j in range(n)], -1) for i in range(n)], -2)
    return adj / det[..., None, None]


def _det2(a, b, c, d):
    return a * d - b * c


def _cofactors_3x3(a: list) -> list:
    """``cof[i][j] = (-1)^(i+j) minor(i, j)`` (cyclic indices carry the signs)."""
    return [[_det2(a[(i + 1) % 3][(j + 1) % 3], a[(i + 1) % 3][(j + 2) % 3],
                   a[(i + 2) % 3][(j + 1) % 3], a[(i + 2) % 3][(j + 2) % 3])
             for j in range(3)] for i in range(3)]


def _cofactors_4x4(a: list) -> list:
    """Cofactors from the 2x2 minors of rows 0-1 (``s``) and rows 2-3 (``c``) (Laplace)."""
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    s = {p: _det2(a[0][p[0]], a[0][p[1]], a[1][p[0]], a[1][p[1]]) for p in pairs}
    c = {p: _det2(a[2][p[0]], a[2][p[1]], a[3][p[0]], a[3][p[1]]) for p in pairs}

    def cofactor(i: int, j: int) -> torch.Tensor:
        minors = c if i < 2 else s
        other = 1 - i if i < 2 else 5 - i  # the row of i's pair that is not i
        cols = [k for k in range(4) if k != j]
        # The 3x3 minor along ``other``'s row, with the complementary 2x2 minors.
        total = 0
        for place, k in enumerate(cols):
            rest = tuple(x for x in cols if x != k)
            total = total + (-1) ** place * a[other][k] * minors[rest]
        return (-1) ** (i + j) * total  # ``other`` is the minor's first or last row

    return [[cofactor(i, j) for j in range(4)] for i in range(4)]


def transform_points(T_b44: torch.Tensor, points_b3n: torch.Tensor) -> torch.Tensor:
    """Apply a rigid transform to points.

    Args:
        T_b44: ``[B, 4, 4]``.
        points_b3n: ``[B, 3, ...]`` (any trailing shape).
    Returns:
        ``[B, 3, ...]``.
    """
    flat = points_b3n.reshape(points_b3n.shape[0], 3, -1)
    out = T_b44[:, :3, :3] @ flat + T_b44[:, :3, 3:4]
    return out.reshape(points_b3n.shape)


@full_precision
def backproject(depth_b1hw: torch.Tensor, invK_b33: torch.Tensor) -> torch.Tensor:
    """Lift pixels to camera-frame 3D points, ``X = depth * K^-1 (x, y, 1)``.

    Args:
        depth_b1hw: ``[B, S, H, W]`` depths along the optical axis (``S`` = 1 for a depth
            map, the number of planes for a frustum volume).
        invK_b33: ``[B, 3, 3]`` inverse intrinsics of that image size.
    Returns:
        points_b3shw: ``[B, 3, S, H, W]``.
    """
    b, s, h, w = depth_b1hw.shape
    pix_3n = pixel_grid(h, w, depth_b1hw.device, depth_b1hw.dtype)
    rays_b3n = invK_b33.to(depth_b1hw.dtype) @ pix_3n
    return rays_b3n.view(b, 3, 1, h, w) * depth_b1hw.unsqueeze(1)


@full_precision
def project(points_b3n: torch.Tensor, K_b33: torch.Tensor, eps: float = PROJECTION_EPS):
    """Project camera-frame points to pixels.

    Args:
        points_b3n: ``[B, 3, ...]``.
        K_b33: ``[B, 3, 3]``.
    Returns:
        (pix_b2n ``[B, 2, ...]``, z_b1n ``[B, 1, ...]``): pixel coordinates and depths.
    """
    flat = points_b3n.reshape(points_b3n.shape[0], 3, -1)
    uvz = K_b33.to(flat.dtype) @ flat
    z = uvz[:, 2:3]
    pix = uvz[:, :2] / (z + eps)
    tail = points_b3n.shape[2:]
    return pix.reshape(-1, 2, *tail), z.reshape(-1, 1, *tail)


def normalize_coords(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Pixel coordinate -> ``grid_sample`` coordinate for ``align_corners=True``."""
    return 2.0 * coord / (size - 1) - 1.0


def _outside_to_zero(norm: torch.Tensor, decide: torch.Tensor | None = None) -> torch.Tensor:
    """Send coordinates outside ``[-1, 1]`` far away so zero padding returns exactly 0.

    Without this, a sample half a pixel outside would blend with the zero border; the
    official code masks the same way. ``decide`` within :data:`BOUNDARY_SLACK` of the
    boundary counts as inside (in float32 the slack rounds away: the official test).
    """
    decide = norm if decide is None else decide
    bound = 1.0 + BOUNDARY_SLACK
    return torch.where((decide > bound) | (decide < -bound), torch.full_like(norm, OUTSIDE),
                       norm)


def sampling_grid(pix_b2n: torch.Tensor, height: int, width: int,
                  decide_pix_b2n: torch.Tensor | None = None) -> torch.Tensor:
    """Pixel coordinates -> normalised, outside-masked grid ``[B, ..., 2]`` (x, y last).

    ``decide_pix_b2n``: the same coordinates computed in :data:`COORD_DTYPE`, which decide
    what is outside (default: ``pix_b2n`` itself).
    """
    decide = pix_b2n if decide_pix_b2n is None else decide_pix_b2n
    x = _outside_to_zero(normalize_coords(pix_b2n[:, 0], width),
                         normalize_coords(decide[:, 0], width))
    y = _outside_to_zero(normalize_coords(pix_b2n[:, 1], height),
                         normalize_coords(decide[:, 1], height))
    return torch.stack([x, y], dim=-1)


def sample(input_bc: torch.Tensor, grid: torch.Tensor, mode: str = "bilinear") -> torch.Tensor:
    """``grid_sample`` with zero padding and ``align_corners=True``, in the wider dtype.

    Promoting (rather than casting the grid to the features' dtype) keeps sub-pixel
    coordinates exact when the features are half precision.
    """
    dtype = torch.promote_types(input_bc.dtype, grid.dtype)
    return F.grid_sample(input_bc.to(dtype), grid.to(dtype), mode=mode, padding_mode="zeros",
                         align_corners=True)


def frustum_points(depth_planes_bd: torch.Tensor, invK_b33: torch.Tensor,
                   height: int, width: int) -> torch.Tensor:
    """3D points of every pixel on every fronto-parallel depth plane.

    Args:
        depth_planes_bd: ``[B, D]`` (or ``[1, D]``, broadcast over the batch).
    Returns:
        points_b3dhw: ``[B, 3, D, H, W]``.
    """
    b = max(depth_planes_bd.shape[0], invK_b33.shape[0])
    depth = depth_planes_bd.expand(b, -1)[:, :, None, None].expand(-1, -1, height, width)
    return backproject(depth, invK_b33.expand(b, 3, 3))


@full_precision
def homography_warp(src_feat_bchw: torch.Tensor, depth_planes_bd: torch.Tensor,
                    src_T_ref_b44: torch.Tensor, K_b33: torch.Tensor,
                    exact_src_T_ref_b44: torch.Tensor | None = None) -> torch.Tensor:
    """Plane-sweep warp: resample a source image onto the reference camera's depth planes.

    For every reference pixel and plane depth ``d``, the source is sampled bilinearly at the
    projection of the reference point at depth ``d``; samples outside the source are 0.

    Args:
        src_feat_bchw: ``[B, C, H, W]`` source features.
        depth_planes_bd: ``[B, D]`` plane depths in the reference frame.
        src_T_ref_b44: ``[B, 4, 4]`` reference-to-source transform.
        K_b33: ``[B, 3, 3]`` intrinsics of the feature map (same for both views).
        exact_src_T_ref_b44: the transform computed in :data:`COORD_DTYPE` from the poses
            (default: ``src_T_ref_b44`` widened), for the inside/outside decisions.
    Returns:
        warped_bcdhw: ``[B, C, D, H, W]``.
    """
    b, c, h, w = src_feat_bchw.shape
    d = depth_planes_bd.shape[1]
    exact = src_T_ref_b44 if exact_src_T_ref_b44 is None else exact_src_T_ref_b44
    with torch.no_grad():  # poses and planes take no gradient; only the features do
        pix = _sweep_pixels(depth_planes_bd, src_T_ref_b44, K_b33, h, w)
        decide = _sweep_pixels(depth_planes_bd.to(COORD_DTYPE), exact.to(COORD_DTYPE),
                               K_b33.to(COORD_DTYPE), h, w)
        grid = sampling_grid(pix, h, w, decide).view(b, d * h, w, 2)
    return sample(src_feat_bchw, grid).view(b, c, d, h, w)


def _sweep_pixels(depth_planes_bd, src_T_ref_b44, K_b33, h: int, w: int) -> torch.Tensor:
    """Source pixel ``[B, 2, D, H, W]`` of every reference pixel on every plane."""
    points = frustum_points(depth_planes_bd, torch.linalg.inv_ex(K_b33).inverse, h, w)
    return project(transform_points(src_T_ref_b44, points), K_b33, eps=1e-8)[0]


def warp_volume(src_volume_bcdhw: torch.Tensor, depth_min: float, depth_interval: float,
                src_T_ref_b44: torch.Tensor, K_b33: torch.Tensor,
                exact_src_T_ref_b44: torch.Tensor | None = None) -> torch.Tensor:
    """Resample a source frustum volume into the reference frustum (trilinear).

    Both volumes live on the same ``D`` uniform depth planes ``depth_min + k * interval``.
    Each reference voxel is moved into the source camera; x and y index the source pixel,
    its source-frame depth indexes the plane. Samples outside the source frustum are 0.

    Args:
        src_volume_bcdhw: ``[B, C, D, H, W]``.
        src_T_ref_b44: ``[B, 4, 4]``.
        K_b33: ``[B, 3, 3]`` intrinsics at the volume's resolution.
        exact_src_T_ref_b44: as in :func:`homography_warp`.
    Returns:
        ``[B, C, D, H, W]``.
    """
    _, _, d, h, w = src_volume_bcdhw.shape
    grid = volume_sampling_grid(d, h, w, depth_min, depth_interval, src_T_ref_b44, K_b33,
                                exact_src_T_ref_b44)
    return sample(src_volume_bcdhw, grid)


@full_precision
def volume_sampling_grid(d: int, h: int, w: int, depth_min: float, depth_interval: float,
                         src_T_ref_b44: torch.Tensor, K_b33: torch.Tensor,
                         exact_src_T_ref_b44: torch.Tensor | None = None) -> torch.Tensor:
    """The ``[B, D, H, W, 3]`` grid used by :func:`warp_volume` (reusable across volumes)."""
    exact = src_T_ref_b44 if exact_src_T_ref_b44 is None else exact_src_T_ref_b44
    pix, plane = _volume_coords(d, h, w, depth_min, depth_interval, src_T_ref_b44, K_b33)
    decide_pix, decide_plane = _volume_coords(d, h, w, depth_min, depth_interval,
                                              exact.to(COORD_DTYPE), K_b33.to(COORD_DTYPE))
    xy = sampling_grid(pix, h, w, decide_pix)
    plane = _outside_to_zero(plane, decide_plane)
    return torch.cat([xy, plane.unsqueeze(-1)], dim=-1)


def _volume_coords(d, h, w, depth_min, depth_interval, src_T_ref_b44, K_b33):
    """Source pixels ``[B, 2, D, H, W]`` and normalised plane coordinate ``[B, D, H, W]``."""
    dtype = src_T_ref_b44.dtype
    planes = depth_min + depth_interval * torch.arange(d, device=K_b33.device, dtype=dtype)
    points = frustum_points(planes[None], torch.linalg.inv_ex(K_b33.to(dtype)).inverse, h, w)
    pix, z = project(transform_points(src_T_ref_b44, points), K_b33)
    return pix, 2.0 * ((z[:, 0] - depth_min) / depth_interval) / (d - 1) - 1.0


@full_precision
def depth_reprojection_error(depth_ref_b1hw: torch.Tensor, depth_src_b1hw: torch.Tensor,
                             src_T_ref_b44: torch.Tensor, K_b33: torch.Tensor):
    """Disagreement between two depth maps of a scene seen from two posed cameras.

    Reference pixels are moved into the source camera; their predicted source depth is
    compared with the source depth map sampled (nearest) at the projected pixel.

    Returns:
        (abs_err_b1hw, valid_b1hw): ``|z_projected - depth_src|`` and where it is defined
        (both depths positive, projection inside the source image).
    """
    _, _, h, w = depth_ref_b1hw.shape
    points = backproject(depth_ref_b1hw, torch.linalg.inv_ex(K_b33).inverse)[:, :, 0]
    pix, z = project(transform_points(src_T_ref_b44, points), K_b33)
    sampled, valid = _sample_nearest(depth_src_b1hw, pix, h, w)
    valid = valid & (depth_ref_b1hw > 0) & (sampled > 0) & (z > 0)
    return (z - sampled).abs() * valid, valid


def _sample_nearest(img_b1hw: torch.Tensor, pix_b2hw: torch.Tensor, h: int, w: int):
    grid = sampling_grid(pix_b2hw, h, w)
    inside = (grid.abs() <= 1).all(dim=-1).unsqueeze(1)
    return sample(img_b1hw, grid, "nearest"), inside
