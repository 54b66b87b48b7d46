"""Vectorised numpy ray casting of a :class:`~datasets.synthetic.scene.Scene`: analytic
ray/plane and ray/box intersections, exact z-depth of the first hit, procedural texture."""

from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

from datasets.synthetic.scene import BOX_FACES, OCTAVES, ROOM_FACES, Box, Panel, Scene


def pixel_rays(K_33: np.ndarray, height: int, width: int) -> np.ndarray:
    """Camera-frame ray directions with z = 1, ``[3, H, W]``: the hit distance is the z-depth."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    pix = np.stack([x, y, np.ones_like(x)])
    return np.einsum("ij,jhw->ihw", np.linalg.inv(K_33), pix)


class _Hits:
    """First-hit distance and surface id per pixel, updated primitive by primitive."""

    def __init__(self, height: int, width: int):
        self.t = np.full((height, width), np.inf, np.float32)
        self.sid = np.full((height, width), -1, np.int32)

    def update(self, region, t: np.ndarray, sid: np.ndarray) -> None:
        closer = t < self.t[region]
        self.t[region] = np.where(closer, t, self.t[region])
        self.sid[region] = np.where(closer, sid, self.sid[region])


def _screen_region(corners_w3: np.ndarray, cam_T_world: np.ndarray, K_33: np.ndarray,
                   height: int, width: int):
    """Pixel slice covering the projection of a convex object given by its corners.

    The part behind the camera is cut off first: corners in front plus the points where
    segments between a front and a back corner cross the near plane span the visible part
    (segments through the interior add nothing beyond the convex hull). ``None`` when the
    object cannot be seen.
    """
    near = 1e-3
    cam = corners_w3 @ cam_T_world[:3, :3].T + cam_T_world[:3, 3]
    front, back = cam[cam[:, 2] > near], cam[cam[:, 2] <= near]
    if len(front) == 0:
        return None
    if len(back):
        a, b = np.repeat(front, len(back), 0), np.tile(back, (len(front), 1))
        alpha = (a[:, 2] - near) / (a[:, 2] - b[:, 2])
        front = np.concatenate([front, a + alpha[:, None] * (b - a)])
    pix = front @ K_33.T
    u, v = pix[:, 0] / pix[:, 2], pix[:, 1] / pix[:, 2]
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, width)
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, height)
    if u0 >= u1 or v0 >= v1:
        return None
    return np.s_[v0:v1, u0:u1]


def _nearest_axis(t_3hw: np.ndarray, largest: bool) -> np.ndarray:
    """Index of the smallest (or largest) of three per-pixel values, ``[H, W]``."""
    better = np.greater_equal if largest else np.less_equal
    return np.where(better(t_3hw[0], t_3hw[1]) & better(t_3hw[0], t_3hw[2]), 0,
                    np.where(better(t_3hw[1], t_3hw[2]), 1, 2))


def _pick(values_3hw: np.ndarray, axis_hw: np.ndarray) -> np.ndarray:
    return np.take_along_axis(values_3hw, axis_hw[None], 0)[0]


def _intersect_room(hits: _Hits, origin: np.ndarray, rays: np.ndarray, scene: Scene) -> None:
    """The camera is inside the room: the hit is the nearest exit along any axis."""
    lo = (scene.room_lo - origin).astype(np.float32)[:, None, None]
    hi = (scene.room_hi - origin).astype(np.float32)[:, None, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        exits = np.where(rays > 0, hi, lo) / rays
    exits[~(exits > 0)] = np.inf  # rays parallel to a wall pair (0/0, x/0)
    axis = _nearest_axis(exits, largest=False)
    sid = 2 * axis + (_pick(rays, axis) > 0)
    hits.update(np.s_[:, :], _pick(exits, axis), sid.astype(np.int32))


def _box_corners(box: Box) -> np.ndarray:
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    corners = []
    for sx in (-1, 1):
        for sy in (-1, 1):
            lx, ly = sx * box.half_xy[0], sy * box.half_xy[1]
            xy = box.center_xy + [c * lx - s * ly, s * lx + c * ly]
            corners += [[xy[0], xy[1], box.z_range[0]], [xy[0], xy[1], box.z_range[1]]]
    return np.array(corners)


def _to_box_frame(box: Box, vectors: np.ndarray, is_point: bool) -> np.ndarray:
    """World -> box frame (centre at origin, axes aligned): rotate by -yaw about z."""
    c, s = np.cos(box.yaw), np.sin(box.yaw)
    v = vectors
    if is_point:
        shift = np.array([box.center_xy[0], box.center_xy[1], sum(box.z_range) / 2])
        v = v - shift.reshape((3,) + (1,) * (v.ndim - 1))
    return np.stack([c * v[0] + s * v[1], -s * v[0] + c * v[1], v[2]])


def _box_half(box: Box) -> np.ndarray:
    return np.array([box.half_xy[0], box.half_xy[1], (box.z_range[1] - box.z_range[0]) / 2])


def _intersect_box(hits: _Hits, origin, rays, box: Box, sid0: int, region) -> None:
    """Slab test; the camera is outside every box, so the entry face is the hit."""
    o = _to_box_frame(box, origin, is_point=True).astype(np.float32)
    d = _to_box_frame(box, rays[(slice(None),) + region], is_point=False).astype(np.float32)
    half = _box_half(box).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / d
        t_lo = (-half - o)[:, None, None] * inv
        t_hi = (half - o)[:, None, None] * inv
    t_enter = np.minimum(t_lo, t_hi)
    t_exit = np.maximum(t_lo, t_hi)
    axis = _nearest_axis(t_enter, largest=True)
    t_near = _pick(t_enter, axis)
    t_far = np.minimum(np.minimum(t_exit[0], t_exit[1]), t_exit[2])
    hit = (t_near <= t_far) & (t_near > 0)
    # Entering through the high side when moving towards -axis.
    high_side = _pick(d, axis) < 0
    hits.update(region, np.where(hit, t_near, np.float32(np.inf)),
                (sid0 + 2 * axis + high_side).astype(np.int32))


def _intersect_panel(hits: _Hits, origin, rays, panel: Panel, sid: int, region) -> None:
    d = rays[(slice(None),) + region]
    n = panel.normal
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((panel.center - origin) @ n) / np.einsum("i,ihw->hw", n, d)
    point = origin[:, None, None] + t * d - panel.center[:, None, None]
    a = np.einsum("i,ihw->hw", panel.axis_u, point)
    b = np.einsum("i,ihw->hw", panel.axis_v, point)
    hit = (t > 0) & (np.abs(a) <= panel.half_uv[0]) & (np.abs(b) <= panel.half_uv[1])
    hits.update(region, np.where(hit, t, np.inf).astype(np.float32),
                np.full(t.shape, sid, np.int32))


# Texture coordinates of an axis-aligned face: the two coordinates it spans.
_FACE_U = np.array([1, 0, 0])
_FACE_V = np.array([2, 2, 1])


def _surface_frames(scene: Scene, points: np.ndarray, sid: np.ndarray):
    """Texture coordinates ``(u, v)`` in metres and unit normals ``[3, H, W]`` of each hit."""
    # Room faces cover most pixels: fill every pixel as if it hit one (cheaper than
    # masking), then overwrite the pixels of boxes and panels.
    axis = np.clip(sid, 0, ROOM_FACES - 1) // 2
    u = _pick(points, _FACE_U[axis])
    v = _pick(points, _FACE_V[axis])
    normal = np.stack([axis == k for k in range(3)]).astype(np.float32)

    for index, box in enumerate(scene.boxes):
        sid0 = scene.box_sid(index)
        mask = (sid >= sid0) & (sid < sid0 + BOX_FACES)
        if not mask.any():
            continue
        local = _to_box_frame(box, points[:, mask], is_point=True)
        axis = (sid[mask] - sid0) // 2
        columns = np.arange(axis.size)
        u[mask] = local[_FACE_U[axis], columns]
        v[mask] = local[_FACE_V[axis], columns]
        local_normal = np.zeros((3, axis.size))
        local_normal[axis, columns] = 1.0
        c, s = np.cos(box.yaw), np.sin(box.yaw)
        normal[:, mask] = np.stack([c * local_normal[0] - s * local_normal[1],
                                    s * local_normal[0] + c * local_normal[1], local_normal[2]])

    for index, panel in enumerate(scene.panels):
        mask = sid == scene.panel_sid(index)
        if not mask.any():
            continue
        offset = points[:, mask] - panel.center[:, None]
        u[mask] = panel.axis_u @ offset
        v[mask] = panel.axis_v @ offset
        normal[:, mask] = panel.normal[:, None]
    return u, v, normal


def _fade(freq: float | np.ndarray, footprint: np.ndarray) -> np.ndarray:
    """Band-limit a texture component: full up to 0.3 cycles per pixel, gone at 0.6.

    Without it, fine texture aliases into view-dependent noise that no matcher could use.
    """
    return np.clip(np.float32(2.0) - np.float32(1 / 0.3) * freq * footprint, 0.0, 1.0)


def _wrapped_lookup(table: np.ndarray, map_x: np.ndarray, map_y: np.ndarray) -> np.ndarray:
    """Bilinear lookup in a periodic table (value noise), via cv2.remap."""
    # remap stores coordinates as int16 internally; wrap only when they could overflow
    # (never for rooms of a few metres, and np.mod costs more than the lookup).
    if max(np.abs(map_x).max(), np.abs(map_y).max()) > 30000:
        map_x, map_y = np.mod(map_x, table.shape[1]), np.mod(map_y, table.shape[0])
    return cv2.remap(table, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)


def _texture(scene: Scene, u, v, sid, footprint) -> np.ndarray:
    """Grey level in [0, 1] per pixel: value-noise octaves plus a per-surface pattern."""
    tex = scene.textures
    sid = np.maximum(sid, 0)
    cos_a, sin_a = np.cos(tex.angle)[sid], np.sin(tex.angle)[sid]
    ru, rv = cos_a * u - sin_a * v, sin_a * u + cos_a * v
    offset_u, offset_v = tex.offset[sid, 0], tex.offset[sid, 1]

    noise = np.zeros(sid.shape, np.float32)
    for octave, (freq, amp) in enumerate(OCTAVES):
        weight = _fade(freq, footprint)
        if not weight.any():
            continue
        # Each octave reads the table at its own offset so octaves are uncorrelated.
        map_x = ru * np.float32(freq) + (offset_u + np.float32(61.7 * octave))
        map_y = rv * np.float32(freq) + (offset_v + np.float32(23.3 * octave))
        sample = _wrapped_lookup(scene.noise, map_x, map_y)
        noise += (np.float32(2 * amp) * weight) * (sample - np.float32(0.5))

    freq = tex.pattern_freq[sid]
    phase_u, phase_v = np.sin(2 * np.pi * freq * ru), np.sin(2 * np.pi * freq * rv)
    pattern = np.select([tex.pattern[sid] == 1, tex.pattern[sid] == 2],
                        [np.tanh(4.0 * phase_u * phase_v), phase_u], 0.0)
    pattern *= tex.pattern_amp[sid] * _fade(freq, footprint)
    # A soft squash rather than clipping: clipped regions would be flat, i.e. unmatchable.
    return 0.5 + 0.5 * np.tanh(2.0 * (tex.noise_amp[sid] * noise + pattern))


def render(scene: Scene, world_T_cam_44: np.ndarray, K_33: np.ndarray, height: int,
           width: int, rays: Optional[np.ndarray] = None):
    """Ray-cast one view.

    Args:
        rays: optional precomputed :func:`pixel_rays` for ``K_33`` (reused across frames).
    Returns:
        (rgb_hw3 uint8, depth_hw float32 z-depth in metres, inf where nothing is hit,
        sid_hw int32 surface id, -1 where nothing is hit).
    """
    if rays is None:
        rays = pixel_rays(K_33, height, width)
    rotation, origin = world_T_cam_44[:3, :3], world_T_cam_44[:3, 3]
    rays_w = np.einsum("ij,jhw->ihw", rotation.astype(np.float32), rays.astype(np.float32))
    cam_T_world = np.linalg.inv(world_T_cam_44)

    hits = _Hits(height, width)
    _intersect_room(hits, origin, rays_w, scene)
    for index, box in enumerate(scene.boxes):
        region = _screen_region(_box_corners(box), cam_T_world, K_33, height, width)
        if region is not None:
            _intersect_box(hits, origin, rays_w, box, scene.box_sid(index), region)
    for index, panel in enumerate(scene.panels):
        corners = np.array([panel.center + a * panel.half_uv[0] * panel.axis_u
                            + b * panel.half_uv[1] * panel.axis_v
                            for a in (-1, 1) for b in (-1, 1)])
        region = _screen_region(corners, cam_T_world, K_33, height, width)
        if region is not None:
            _intersect_panel(hits, origin, rays_w, panel, scene.panel_sid(index), region)

    depth = hits.t
    hit = np.isfinite(depth)
    hit_depth = np.where(hit, depth, np.float32(0))
    points = origin.astype(np.float32)[:, None, None] + hit_depth * rays_w
    u, v, normal = _surface_frames(scene, points, hits.sid)

    ray_length = np.sqrt(np.einsum("ihw,ihw->hw", rays_w, rays_w))
    cos_view = np.abs(np.einsum("ihw,ihw->hw", normal, rays_w)) / ray_length
    # Metres of surface under one pixel: grows with depth and at grazing angles.
    footprint = hit_depth * ray_length / np.float32(K_33[0, 0]) / np.maximum(cos_view, 0.1)
    grey = _texture(scene, u, v, hits.sid, footprint)

    to_light = scene.light.astype(np.float32)[:, None, None] - points
    dist2 = np.einsum("ihw,ihw->hw", to_light, to_light)
    lambert = np.abs(np.einsum("ihw,ihw->hw", normal, to_light)) / np.sqrt(dist2)
    shade = np.float32(0.5) + np.float32(0.5) * lambert / (1 + np.float32(0.03) * dist2)

    tex = scene.textures
    sid = np.maximum(hits.sid, 0)
    color_a = tex.color_a[sid]
    color = color_a + (tex.color_b[sid] - color_a) * grey[..., None]
    rgb = np.where(hit[..., None], color * (np.float32(255) * shade[..., None]), 0.0)
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8), depth, hits.sid
