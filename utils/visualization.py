"""Colourised depth and probability maps, and side-by-side panels (one place for pictures)."""

import cv2
import numpy as np
import torch


def _to_numpy(x) -> np.ndarray:
    if torch.is_tensor(x):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32).squeeze()


def colorize(values_hw, vmin: float, vmax: float, colormap=cv2.COLORMAP_RAINBOW,
             invalid_hw=None) -> np.ndarray:
    """Map values to an RGB ``uint8`` image ``[H, W, 3]``; invalid pixels are black."""
    v = _to_numpy(values_hw)
    scaled = np.clip((v - vmin) / max(vmax - vmin, 1e-12), 0, 1)
    rgb = cv2.cvtColor(cv2.applyColorMap((scaled * 255).astype(np.uint8), colormap),
                       cv2.COLOR_BGR2RGB)
    if invalid_hw is not None:
        rgb[_to_numpy(invalid_hw).astype(bool)] = 0
    return rgb


def colorize_depth(depth_hw, max_depth: float = 5.0, min_depth: float = 0.0) -> np.ndarray:
    """Depth in metres -> RGB (the official colour map, 0..``max_depth``); 0 is black."""
    depth = _to_numpy(depth_hw)
    return colorize(depth, min_depth, max_depth, invalid_hw=~(depth > 0))


def colorize_prob(prob_hw) -> np.ndarray:
    """Probability (0..1) -> RGB."""
    return colorize(prob_hw, 0.0, 1.0)


def image_to_uint8(img_3hw) -> np.ndarray:
    """A ``[3, H, W]`` RGB image in 0..255 -> ``uint8 [H, W, 3]``."""
    return np.clip(_to_numpy(img_3hw).transpose(1, 2, 0), 0, 255).astype(np.uint8)


def panel(rows: list, titles: list | None = None, gap: int = 4) -> np.ndarray:
    """Tile rows of RGB images (resized to the first image's size) with optional titles."""
    h, w = rows[0][0].shape[:2]
    title_h = 22 if titles else 0
    ncols = max(len(r) for r in rows)
    canvas = np.full((title_h + len(rows) * (h + gap), ncols * (w + gap), 3), 255, np.uint8)
    for c, title in enumerate(titles or []):
        cv2.putText(canvas, title, (c * (w + gap) + 4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    (0, 0, 0), 1, cv2.LINE_AA)
    for r, row in enumerate(rows):
        for c, img in enumerate(row):
            img = cv2.resize(img, (w, h), interpolation=cv2.INTER_NEAREST)
            y, x = title_h + r * (h + gap), c * (w + gap)
            canvas[y:y + h, x:x + w] = img
    return canvas
