"""Every image the library reads becomes RGB here, as a person looking at it would expect.

Pillow hands over many modes; `Image.convert("RGB")` alone clips 16-bit and float images to white,
drops transparency onto black and ignores the camera's orientation. `to_rgb` is the one place that
turns a picture into what the model sees, for training data, evaluation, chat and the server.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageOps

# What shows through transparent pixels: white, as an image viewer shows them on a page.
BACKGROUND = (255, 255, 255)
# Modes Pillow converts to RGB faithfully (palette, CMYK and YCbCr included).
DIRECT = {"1", "L", "P", "RGB", "CMYK", "YCbCr", "RGBX"}
TRANSPARENT = {"LA", "La", "PA", "RGBA", "RGBa"}


def to_rgb(image: Image.Image, where: str = "image") -> Image.Image:
    """`image` upright (EXIF orientation applied) as 8-bit RGB: transparency composited on
    `BACKGROUND`; 16-bit, 32-bit and float gray levels scaled from the range they were stored in
    (`_to_8_bit`), never clipped. A mode with no such reading is a `ValueError` naming `where` and
    the mode."""
    image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "P" and "transparency" in image.info:
        mode, image = "RGBA", image.convert("RGBA")
    if mode in TRANSPARENT:
        rgba = image.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (*BACKGROUND, 255)), rgba).convert("RGB")
    if mode in DIRECT:
        return image.convert("RGB")
    if mode.startswith("I") or mode == "F":
        return Image.fromarray(_to_8_bit(np.asarray(image), mode), "L").convert("RGB")
    raise ValueError(f"{where}: cannot read an image of mode {mode!r} as RGB")


def _to_8_bit(values: np.ndarray, mode: str) -> np.ndarray:
    """Gray levels scaled from the range the values were stored in: 16-bit modes from 0-65535;
    32-bit integers from 0-255 or 0-65535 when they fit, floats from 0-1 or 0-255; else their own."""
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if mode.startswith("I;16"):
        ranges = [(0.0, 65535.0)]
    elif mode == "F":
        ranges = [(0.0, 1.0), (0.0, 255.0)]
    else:
        ranges = [(0.0, 255.0), (0.0, 65535.0)]
    bottom, top = next(((a, b) for a, b in ranges if a <= low and high <= b), (low, max(high, low + 1e-12)))
    return np.round((values - bottom) / (top - bottom) * 255).clip(0, 255).astype(np.uint8)
