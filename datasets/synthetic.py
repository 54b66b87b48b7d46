"""Synthetic posed RGB-D video of textured rooms, written in the ScanNet or 7-Scenes layout.

Each scene is a closed room (textured walls, floor and ceiling) with a few boxes, pictures
and leaning boards, seen by a camera moving smoothly like a hand-held video (a few cm and
about a degree per frame). Rendering is vectorised numpy ray casting with analytic
ray/plane and ray/box intersections; the depth is the exact z-depth (along the optical
axis) of the first hit, so the loaders and the geometry can be checked against it.

Command line (see ``--help``)::

    python -m datasets.synthetic --out /tmp/synth --layout scannet --scenes 10 \\
        --frames 100 --height 480 --width 640 --seed 0

The output is deterministic for a seed (independent of ``--workers``). Each scene is
written to a hidden temporary folder and renamed into place when complete, so an
interrupted run never leaves a scene that looks finished.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import cv2
import numpy as np

from datasets.intrinsics import (OFFICIAL_HW, OFFICIAL_K_33, SEVEN_SCENES_HW, SEVEN_SCENES_K_33,
                                 resize_intrinsics)
from datasets.io import DEPTH_INVALID_MARKER, DEPTH_SCALE
from utils.io import save_json, save_text

logger = logging.getLogger(__name__)

LAYOUTS = ("scannet", "7scenes")
TMP_PREFIX = ".synthetic-tmp-"
# Depth beyond this is "not measured", like a depth camera's range limit.
MAX_DEPTH = 6.0
# Noise octaves: (cycles per metre, amplitude), from room-scale blotches down to ~1 cm grain.
OCTAVES = ((0.7, 0.3), (2.0, 0.3), (5.0, 0.3), (13.0, 0.35), (35.0, 0.4), (80.0, 0.4))
NOISE_TABLE_SIZE = 256
ROOM_FACES = 6
BOX_FACES = 6


@dataclass
class Box:
    """A box standing upright: footprint centre, yaw about the vertical, half sizes, z range."""

    center_xy: np.ndarray
    yaw: float
    half_xy: np.ndarray
    z_range: tuple[float, float]


@dataclass
class Panel:
    """A two-sided rectangle ``center + a * axis_u + b * axis_v``, ``|a|, |b| <= half_uv``."""

    center: np.ndarray
    axis_u: np.ndarray
    axis_v: np.ndarray
    half_uv: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.axis_u, self.axis_v)


@dataclass
class Textures:
    """Per-surface texture parameters (index = surface id)."""

    color_a: np.ndarray        # [S, 3] RGB 0..1
    color_b: np.ndarray        # [S, 3]
    angle: np.ndarray          # [S] texture rotation
    offset: np.ndarray         # [S, 2] texture translation (noise-table cells)
    noise_amp: np.ndarray      # [S]
    pattern: np.ndarray        # [S] 0 none, 1 checker, 2 stripes
    pattern_freq: np.ndarray   # [S] cycles per metre
    pattern_amp: np.ndarray    # [S]


@dataclass
class Scene:
    """A room ``room_lo <= x <= room_hi`` (world z up) with its contents and textures.

    Surface ids: room faces ``0..5`` (``2 * axis + (0: low side, 1: high side)``), then six
    per box in the same order, then one per panel.
    """

    room_lo: np.ndarray
    room_hi: np.ndarray
    boxes: list[Box]
    panels: list[Panel]
    light: np.ndarray
    textures: Textures
    noise: np.ndarray = field(repr=False)

    def box_sid(self, box_index: int) -> int:
        return ROOM_FACES + BOX_FACES * box_index

    def panel_sid(self, panel_index: int) -> int:
        return ROOM_FACES + BOX_FACES * len(self.boxes) + panel_index


# ----------------------------------------------------------------------------- scene sampling

def _random_textures(rng: np.random.Generator, count: int) -> Textures:
    hue = rng.uniform(0, 180, count)
    sat = rng.uniform(40, 190, count)
    val = rng.uniform(150, 240, count)
    hsv_a = np.stack([hue, sat, val], -1)
    hsv_b = np.stack([(hue + rng.uniform(-40, 40, count)) % 180,
                      np.clip(sat + rng.uniform(-60, 60, count), 0, 255),
                      val * rng.uniform(0.25, 0.55, count)], -1)

    def to_rgb(hsv):
        pixels = hsv.astype(np.uint8)[None]
        return cv2.cvtColor(pixels, cv2.COLOR_HSV2RGB)[0].astype(np.float32) / 255.0

    return Textures(
        color_a=to_rgb(hsv_a), color_b=to_rgb(hsv_b),
        angle=rng.uniform(0, np.pi, count).astype(np.float32),
        offset=rng.uniform(0, NOISE_TABLE_SIZE, (count, 2)).astype(np.float32),
        noise_amp=rng.uniform(0.6, 1.0, count).astype(np.float32),
        pattern=rng.integers(0, 3, count),
        pattern_freq=rng.uniform(1.5, 6.0, count).astype(np.float32),
        pattern_amp=rng.uniform(0.15, 0.35, count).astype(np.float32),
    )


@dataclass
class Trajectory:
    """Smooth camera path: Lissajous position around ``center`` and drifting yaw."""

    center: np.ndarray          # [3]
    radius: np.ndarray          # [3]
    rate: np.ndarray            # [3] rad per frame
    phase: np.ndarray           # [3]
    yaw0: float
    yaw_drift: float            # rad per frame
    yaw_wobble: tuple[float, float, float]    # amplitude, rate, phase
    pitch: tuple[float, float, float, float]  # mean, amplitude, rate, phase
    roll: tuple[float, float, float]          # amplitude, rate, phase

    def footprint(self) -> tuple[np.ndarray, np.ndarray]:
        """xy bounds the camera can reach."""
        return self.center[:2] - self.radius[:2], self.center[:2] + self.radius[:2]

    def poses(self, num_frames: int) -> np.ndarray:
        """``world_T_cam`` for frames ``0..num_frames-1`` (OpenCV camera: x right, y down)."""
        s = np.arange(num_frames, dtype=np.float64)[:, None]
        position = self.center + self.radius * np.sin(self.rate * s + self.phase)
        s = s[:, 0]
        yaw = self.yaw0 + self.yaw_drift * s + self.yaw_wobble[0] * np.sin(
            self.yaw_wobble[1] * s + self.yaw_wobble[2])
        pitch = self.pitch[0] + self.pitch[1] * np.sin(self.pitch[2] * s + self.pitch[3])
        roll = self.roll[0] * np.sin(self.roll[1] * s + self.roll[2])

        forward = np.stack([np.cos(pitch) * np.cos(yaw), np.cos(pitch) * np.sin(yaw),
                            np.sin(pitch)], -1)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right, axis=-1, keepdims=True)
        down = np.cross(forward, right)
        # Roll rotates the image axes about the optical axis.
        cos_r, sin_r = np.cos(roll)[:, None], np.sin(roll)[:, None]
        x_axis = cos_r * right + sin_r * down
        y_axis = -sin_r * right + cos_r * down

        world_T_cam = np.tile(np.eye(4), (num_frames, 1, 1))
        world_T_cam[:, :3, :3] = np.stack([x_axis, y_axis, forward], axis=-1)
        world_T_cam[:, :3, 3] = position
        return world_T_cam


def random_trajectory(rng: np.random.Generator, room_lo: np.ndarray,
                      room_hi: np.ndarray) -> Trajectory:
    """A hand-held-like path: 1-4 cm and 0.5-1.3 degrees per frame, away from the walls."""
    radius = np.array([rng.uniform(0.3, 0.6), rng.uniform(0.25, 0.5), rng.uniform(0.05, 0.15)])
    room_center = (room_lo + room_hi) / 2
    # Keep >= 1.3 m between the camera and the walls so boxes fit in between.
    slack = np.maximum((room_hi[:2] - room_lo[:2]) / 2 - radius[:2] - 1.3, 0.0)
    center = np.array([room_center[0] + rng.uniform(-1, 1) * slack[0],
                       room_center[1] + rng.uniform(-1, 1) * slack[1],
                       rng.uniform(1.25, 1.5)])
    return Trajectory(
        center=center, radius=radius,
        rate=rng.uniform(0.03, 0.06, 3) * rng.choice([-1, 1], 3),
        phase=rng.uniform(0, 2 * np.pi, 3),
        yaw0=rng.uniform(0, 2 * np.pi),
        yaw_drift=rng.uniform(0.009, 0.018) * rng.choice([-1, 1]),
        yaw_wobble=(rng.uniform(0.1, 0.25), rng.uniform(0.02, 0.03), rng.uniform(0, 2 * np.pi)),
        pitch=(rng.uniform(-0.2, -0.05), rng.uniform(0.03, 0.1), rng.uniform(0.015, 0.03),
               rng.uniform(0, 2 * np.pi)),
        roll=(rng.uniform(0.0, 0.05), rng.uniform(0.01, 0.03), rng.uniform(0, 2 * np.pi)),
    )


def _random_boxes(rng: np.random.Generator, room_lo, room_hi, keep_lo, keep_hi,
                  count: int) -> list[Box]:
    """Boxes outside the camera's keep-out rectangle (rejection sampling)."""
    boxes = []
    for _ in range(200):
        if len(boxes) == count:
            break
        half = rng.uniform(0.12, 0.5, 2)
        reach = np.hypot(*half)
        center = rng.uniform(room_lo[:2] + reach + 0.02, room_hi[:2] - reach - 0.02)
        if np.all(center + reach > keep_lo) and np.all(center - reach < keep_hi):
            continue
        if rng.random() < 0.6:
            z_range = (0.0, rng.uniform(0.3, 1.6))          # furniture on the floor
        else:
            bottom = rng.uniform(0.6, 1.8)                  # a shelf or cabinet on the wall
            z_range = (bottom, bottom + rng.uniform(0.05, 0.5))
        boxes.append(Box(center, rng.uniform(0, np.pi), half, z_range))
    return boxes


def _random_panels(rng: np.random.Generator, room_lo, room_hi, count: int) -> list[Panel]:
    """Pictures hanging just off a wall and boards leaning against one."""
    panels = []
    up = np.array([0.0, 0.0, 1.0])
    for _ in range(count):
        axis = rng.integers(0, 2)                 # wall perpendicular to x or y
        side = rng.integers(0, 2)
        inward = np.zeros(3)
        inward[axis] = 1.0 if side == 0 else -1.0
        along = np.zeros(3)
        along[1 - axis] = 1.0
        wall = room_lo[axis] if side == 0 else room_hi[axis]
        half_u = rng.uniform(0.2, 0.5)
        pos_along = rng.uniform(room_lo[1 - axis] + half_u + 0.05,
                                room_hi[1 - axis] - half_u - 0.05)
        center = np.zeros(3)
        center[1 - axis] = pos_along
        if rng.random() < 0.5:
            center[axis] = wall + inward[axis] * rng.uniform(0.02, 0.12)
            center[2] = rng.uniform(1.0, 2.0)
            panels.append(Panel(center, along, up, np.array([half_u, rng.uniform(0.15, 0.4)])))
        else:
            foot, top = rng.uniform(0.25, 0.5), rng.uniform(1.0, 1.8)
            bottom_point = wall + inward[axis] * foot
            axis_v = (-foot * inward + top * up) / np.hypot(foot, top)
            center[axis] = (bottom_point + wall) / 2
            center[2] = top / 2
            half_v = np.hypot(foot, top) / 2
            panels.append(Panel(center, along, axis_v, np.array([half_u, half_v])))
    return panels


def random_scene(rng: np.random.Generator) -> tuple[Scene, Trajectory]:
    """A random room, its contents and a camera path through it."""
    half = np.array([rng.uniform(2.0, 3.0), rng.uniform(1.8, 2.8)])
    room_lo = np.array([-half[0], -half[1], 0.0])
    room_hi = np.array([half[0], half[1], rng.uniform(2.5, 3.0)])
    trajectory = random_trajectory(rng, room_lo, room_hi)
    keep_lo, keep_hi = trajectory.footprint()
    boxes = _random_boxes(rng, room_lo, room_hi, keep_lo - 0.6, keep_hi + 0.6,
                          int(rng.integers(4, 8)))
    panels = _random_panels(rng, room_lo, room_hi, int(rng.integers(2, 5)))
    num_surfaces = ROOM_FACES + BOX_FACES * len(boxes) + len(panels)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), room_hi[2] - 0.3])
    scene = Scene(room_lo, room_hi, boxes, panels, light, _random_textures(rng, num_surfaces),
                  rng.random((NOISE_TABLE_SIZE, NOISE_TABLE_SIZE), dtype=np.float32))
    return scene, trajectory


# ----------------------------------------------------------------------------- ray casting

def _pixel_rays(K_33: np.ndarray, height: int, width: int) -> np.ndarray:
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
        rays: optional precomputed :func:`_pixel_rays` for ``K_33`` (reused across frames).
    Returns:
        (rgb_hw3 uint8, depth_hw float32 z-depth in metres, inf where nothing is hit,
        sid_hw int32 surface id, -1 where nothing is hit).
    """
    if rays is None:
        rays = _pixel_rays(K_33, height, width)
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


# ----------------------------------------------------------------------------- writing

def default_intrinsics(layout: str, height: int, width: int) -> np.ndarray:
    """ScanNet layout: the official ESTDepth values; 7-Scenes layout: 7-Scenes' own."""
    if layout == "scannet":
        return resize_intrinsics(OFFICIAL_K_33, OFFICIAL_HW, (height, width))
    return resize_intrinsics(SEVEN_SCENES_K_33, SEVEN_SCENES_HW, (height, width))


def scene_name(layout: str, index: int) -> str:
    """Folder of scene ``index``: ``scene0000_00`` (ScanNet) or ``room0000`` (7-Scenes)."""
    return f"scene{index:04d}_00" if layout == "scannet" else f"room{index:04d}"


def _format_matrix(matrix: np.ndarray) -> str:
    return "\n".join(" ".join(f"{value:.9f}" for value in row) for row in matrix) + "\n"


def _depth_png(depth_hw: np.ndarray, invalid: int) -> np.ndarray:
    valid = np.isfinite(depth_hw) & (depth_hw <= MAX_DEPTH)
    mm = np.rint(np.where(valid, depth_hw, 0.0) * DEPTH_SCALE)
    return np.where(valid, np.clip(mm, 1, 65534), invalid).astype(np.uint16)


def _frame_paths(layout: str, scene_dir: Path, index: int) -> tuple[Path, Path, Path]:
    if layout == "scannet":
        return (scene_dir / "rgb" / f"{index}.jpg", scene_dir / "depth" / f"{index}.png",
                scene_dir / "pose" / f"{index}.txt")
    stem = scene_dir / "seq-01" / f"frame-{index:06d}"
    return Path(f"{stem}.color.png"), Path(f"{stem}.depth.png"), Path(f"{stem}.pose.txt")


def _write_scene(scene_dir: Path, layout: str, scene: Scene, trajectory: Trajectory,
                 frames: int, height: int, width: int, jpeg_quality: int) -> dict:
    """Render every frame of one scene into ``scene_dir`` (which must not exist yet)."""
    K_33 = default_intrinsics(layout, height, width)
    if layout == "scannet":
        folders = [scene_dir / name for name in ("rgb", "depth", "pose", "intrinsic")]
        K_44 = np.eye(4)
        K_44[:3, :3] = K_33
        intrinsics_text = {"intrinsic/intrinsic_color.txt": _format_matrix(K_44)}
        invalid = 0
    else:
        folders = [scene_dir / "seq-01"]
        intrinsics_text = {"seq-01/camera-intrinsics.txt": _format_matrix(K_33)}
        invalid = DEPTH_INVALID_MARKER
    for folder in folders:
        folder.mkdir(parents=True)
    for name, text in intrinsics_text.items():
        (scene_dir / name).write_text(text)

    rays = _pixel_rays(K_33, height, width)
    depth_lo, depth_hi = np.inf, 0.0
    for index, world_T_cam in enumerate(trajectory.poses(frames)):
        pose_text = _format_matrix(world_T_cam)
        # Render with the pose exactly as written, so files agree to the last digit.
        world_T_cam = np.array(pose_text.split(), dtype=np.float64).reshape(4, 4)
        rgb, depth, _ = render(scene, world_T_cam, K_33, height, width, rays)
        color_path, depth_path, pose_path = _frame_paths(layout, scene_dir, index)
        bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
        params = [cv2.IMWRITE_JPEG_QUALITY, jpeg_quality] if layout == "scannet" else []
        if not cv2.imwrite(str(color_path), bgr, params) or \
                not cv2.imwrite(str(depth_path), _depth_png(depth, invalid)):
            raise OSError(f"cannot write frame {index} into {scene_dir}")
        pose_path.write_text(pose_text)
        finite = depth[np.isfinite(depth)]
        depth_lo, depth_hi = min(depth_lo, float(finite.min())), max(depth_hi, float(finite.max()))
    return {"depth_min": depth_lo, "depth_max": depth_hi}


def _generate_one(job: tuple) -> dict:
    """Worker: render scene ``index`` into a temporary folder, then rename it into place."""
    out, layout, index, frames, height, width, seed, jpeg_quality = job
    scene, trajectory = random_scene(np.random.default_rng([seed, index]))
    final = out / scene_name(layout, index)
    tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{final.name}-", dir=out))
    try:
        stats = _write_scene(tmp / "scene", layout, scene, trajectory, frames, height, width,
                             jpeg_quality)
        os.replace(tmp / "scene", final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"scene": final.name, **stats}


def _write_splits(out: Path, layout: str, names: Sequence[str], val: int, test: int) -> dict:
    splits_dir = out / "splits"
    splits_dir.mkdir(exist_ok=True)
    if layout == "7scenes":
        lists = {"test.txt": [f"{name}/seq-01" for name in names]}
    else:
        n_train = len(names) - val - test
        lists = {"train_split.txt": names[:n_train],
                 "val_split.txt": names[n_train:n_train + val],
                 "test_split.txt": names[n_train + val:]}
    for filename, entries in lists.items():
        save_text("".join(f"{entry}\n" for entry in entries), str(splits_dir / filename))
    return {filename: len(entries) for filename, entries in lists.items()}


def generate(out: Path | str, layout: str = "scannet", scenes: int = 10, frames: int = 100,
             height: int = 480, width: int = 640, seed: int = 0, val: int = 1, test: int = 1,
             workers: Optional[int] = None, overwrite: bool = False,
             jpeg_quality: int = 95) -> dict:
    """Generate a synthetic dataset; returns its summary (also saved as ``<out>/synthetic.json``).

    Args:
        layout: ``"scannet"`` (scenes ``scene%04d_00``; ``splits/{train,val,test}_split.txt``
            with the last ``test`` scenes for test and the ``val`` before them for val) or
            ``"7scenes"`` (``room%04d/seq-01``; ``splits/test.txt`` lists every sequence).
        workers: processes rendering scenes in parallel (default: one per CPU, at most
            one per scene). The output does not depend on it.
        overwrite: replace scene folders that already exist (otherwise an error).
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    if layout == "scannet" and (val < 0 or test < 0 or val + test > scenes):
        raise ValueError(f"cannot hold out val={val} and test={test} of {scenes} scenes")
    if scenes < 1 or frames < 1:
        raise ValueError(f"need at least one scene and one frame, got {scenes} and {frames}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = [scene_name(layout, index) for index in range(scenes)]
    existing = [name for name in names if (out / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out} already holds {', '.join(existing[:3])}"
                              f"{' ...' if len(existing) > 3 else ''}; pass overwrite=True "
                              f"(--overwrite) to replace them")
    for name in existing:
        shutil.rmtree(out / name)

    jobs = [(out, layout, index, frames, height, width, seed, jpeg_quality)
            for index in range(scenes)]
    workers = max(1, min(workers or os.cpu_count() or 1, scenes))
    start = time.perf_counter()
    try:
        if workers == 1:
            results = [_generate_one(job) for job in jobs]
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                results = pool.map(_generate_one, jobs)
    finally:
        # A killed worker cannot clean up after itself.
        for stale in out.glob(f"{TMP_PREFIX}*"):
            shutil.rmtree(stale, ignore_errors=True)

    summary = {
        "generator": "datasets.synthetic", "layout": layout, "scenes": scenes, "frames": frames,
        "height": height, "width": width, "seed": seed,
        "intrinsics": default_intrinsics(layout, height, width).tolist(),
        "splits": _write_splits(out, layout, names, val, test),
        "depth_range": [min(r["depth_min"] for r in results),
                        max(r["depth_max"] for r in results)],
    }
    save_json(summary, str(out / "synthetic.json"))
    logger.info("wrote %d %s-layout scenes x %d frames (%dx%d) to %s in %.1f s; depth %.2f-%.2f m",
                scenes, layout, frames, height, width, out, time.perf_counter() - start,
                *summary["depth_range"])
    return summary


def main(argv: Optional[Sequence[str]] = None) -> None:
    from utils.config import str2bool

    parser = argparse.ArgumentParser(
        prog="python -m datasets.synthetic",
        description="Render synthetic posed RGB-D videos of textured rooms in the ScanNet or "
                    "7-Scenes layout (exact z-depth, camera-to-world poses).")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    parser.add_argument("--layout", choices=LAYOUTS, default="scannet")
    parser.add_argument("--scenes", type=int, default=10)
    parser.add_argument("--frames", type=int, default=100, help="frames per scene")
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--val", type=int, default=1,
                        help="scenes held out for validation (ScanNet layout)")
    parser.add_argument("--test", type=int, default=1,
                        help="scenes held out for testing (ScanNet layout)")
    parser.add_argument("--workers", type=int, default=None,
                        help="parallel processes (default: one per CPU)")
    parser.add_argument("--jpeg-quality", "--jpeg_quality", dest="jpeg_quality", type=int,
                        default=95, help="JPEG quality of ScanNet-layout colour images")
    # True/False values as every other entry point takes them; a bare --overwrite still works
    parser.add_argument("--overwrite", type=str2bool, nargs="?", const=True, default=False,
                        metavar="BOOL", help="replace existing scene folders")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    generate(args.out, args.layout, args.scenes, args.frames, args.height, args.width, args.seed,
             args.val, args.test, args.workers, args.overwrite, args.jpeg_quality)


if __name__ == "__main__":
    main()
