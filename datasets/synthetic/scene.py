"""Random scenes: a closed room with boxes, pictures and leaning boards, noise textures, and a
smooth hand-held camera path (deterministic for a random generator's seed)."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

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


def random_scene(rng: np.random.Generator,
                 camera_speed: float = 1.0) -> tuple[Scene, Trajectory]:
    """A random room, its contents and a camera path through it; ``camera_speed``
    multiplies the path's translation rate (the rotation is unchanged), for wider
    baselines between frames."""
    half = np.array([rng.uniform(2.0, 3.0), rng.uniform(1.8, 2.8)])
    room_lo = np.array([-half[0], -half[1], 0.0])
    room_hi = np.array([half[0], half[1], rng.uniform(2.5, 3.0)])
    trajectory = random_trajectory(rng, room_lo, room_hi)
    trajectory.rate = trajectory.rate * camera_speed
    keep_lo, keep_hi = trajectory.footprint()
    boxes = _random_boxes(rng, room_lo, room_hi, keep_lo - 0.6, keep_hi + 0.6,
                          int(rng.integers(4, 8)))
    panels = _random_panels(rng, room_lo, room_hi, int(rng.integers(2, 5)))
    num_surfaces = ROOM_FACES + BOX_FACES * len(boxes) + len(panels)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), room_hi[2] - 0.3])
    scene = Scene(room_lo, room_hi, boxes, panels, light, _random_textures(rng, num_surfaces),
                  rng.random((NOISE_TABLE_SIZE, NOISE_TABLE_SIZE), dtype=np.float32))
    return scene, trajectory
