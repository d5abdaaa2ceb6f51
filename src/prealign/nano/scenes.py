"""Seeded synthetic scenes and their Pillow rendering: the nano world's images.

A scene is a few objects on a 3x3 grid; each has a shape, a colour and a size. The grid makes
spatial language exact (above, left, ...), and a closed set of attributes keeps the text
vocabulary small enough for tiny language models.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 205, 40),
    "purple": (140, 60, 180),
    "orange": (245, 140, 30),
}
SIZES = ("small", "large")
GRID = 3  # cells per side; an image's vision tokens are one per cell (patch = image side / GRID)
IMAGE_SIZE = 72  # pixels per side: 24 px cells, where the small shapes are still ~11 px wide
ROWS = ("top", "middle", "bottom")
COLUMNS = ("left", "centre", "right")
BACKGROUND = (245, 245, 240)


@dataclass(frozen=True)
class SceneObject:
    shape: str
    colour: str
    size: str
    row: int  # 0 top .. 2 bottom
    column: int  # 0 left .. 2 right

    @property
    def position(self) -> str:
        return f"{ROWS[self.row]} {COLUMNS[self.column]}"

    @property
    def name(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Scene:
    objects: tuple[SceneObject, ...]

    def count(self, shape: str | None = None, colour: str | None = None) -> int:
        return sum(
            1
            for o in self.objects
            if (shape is None or o.shape == shape) and (colour is None or o.colour == colour)
        )


def sample_scene(rng: random.Random, min_objects: int = 1, max_objects: int = 4) -> Scene:
    """Objects in distinct grid cells, reading order (top-left first) so descriptions are canonical."""
    n = rng.randint(min_objects, max_objects)
    cells = sorted(rng.sample(range(GRID * GRID), n))
    objects = tuple(
        SceneObject(
            rng.choice(SHAPES), rng.choice(list(COLOURS)), rng.choice(SIZES), cell // GRID, cell % GRID
        )
        for cell in cells
    )
    return Scene(objects)


def render(scene: Scene, size: int = IMAGE_SIZE) -> Image.Image:
    """Draw the scene; same scene and size give the same pixels."""
    image = Image.new("RGB", (size, size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = size / GRID
    for obj in scene.objects:
        cx, cy = (obj.column + 0.5) * cell, (obj.row + 0.5) * cell
        r = cell * (0.42 if obj.size == "large" else 0.24)
        box = (cx - r, cy - r, cx + r, cy + r)
        fill = COLOURS[obj.colour]
        if obj.shape == "circle":
            draw.ellipse(box, fill=fill)
        elif obj.shape == "square":
            draw.rectangle(box, fill=fill)
        elif obj.shape == "triangle":
            draw.polygon([(cx, cy - r), (cx + r, cy + r), (cx - r, cy + r)], fill=fill)
        else:  # diamond
            draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    return image
