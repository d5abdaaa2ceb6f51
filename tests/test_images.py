"""`prealign.images.to_rgb`, mode by mode, against what a person looking at the picture sees."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from prealign.data.records import load_record_image
from prealign.images import BACKGROUND, to_rgb


def rgb(image: Image.Image) -> np.ndarray:
    converted = to_rgb(image)
    assert converted.mode == "RGB"
    return np.asarray(converted).astype(int)


def gray(values) -> np.ndarray:
    """The RGB array of gray levels `values` (one row)."""
    return np.repeat(np.asarray([values]).astype(int)[..., None], 3, axis=-1)


def test_eight_bit_modes_keep_their_colours():
    assert (rgb(Image.fromarray(np.array([[0, 255, 0]], dtype=bool))) == gray([0, 255, 0])).all()  # mode 1
    assert (rgb(Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8))) == gray([0, 77, 255])).all()
    palette = Image.new("P", (2, 1))
    palette.putpalette([255, 0, 0, 0, 0, 255])
    palette.putdata([0, 1])
    assert rgb(palette).tolist() == [[[255, 0, 0], [0, 0, 255]]]
    assert rgb(Image.new("CMYK", (1, 1), (0, 0, 0, 0))).tolist() == [[[255, 255, 255]]]  # no ink: white


@pytest.mark.parametrize(
    "mode,values,expected",
    [
        ("I;16", [0, 32896, 65535], [0, 128, 255]),  # 16-bit: scaled from 0-65535, not clipped
        ("I", [0, 32896, 65535], [0, 128, 255]),  # 32-bit holding 16-bit levels
        ("I", [0, 128, 255], [0, 128, 255]),  # 32-bit holding 8-bit levels
        ("I", [-100, 0, 100], [0, 128, 255]),  # outside every standard range: its own
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # float in [0, 1]
        ("F", [0.0, 127.5, 255.0], [0, 128, 255]),  # float holding 8-bit levels
    ],
)
def test_deep_gray_images_are_scaled_from_the_range_they_were_stored_in(mode, values, expected):
    dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
    image = Image.fromarray(np.array([values], dtype=dtype))
    if mode == "I;16":
        assert image.mode == "I;16"
    assert (rgb(image) == gray(expected)).all()


def test_transparency_is_composited_on_white():
    la = Image.fromarray(np.array([[[100, 0], [100, 255], [100, 128]]], dtype=np.uint8), "LA")
    blended = round(100 * 128 / 255 + 255 * 127 / 255)
    assert (rgb(la) == gray([255, 100, blended])).all()
    rgba = Image.new("RGBA", (1, 1), (255, 0, 0, 0))
    assert rgb(rgba).tolist() == [[list(BACKGROUND)]]
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, 0, 255, 0])
    palette.putdata([0, 1])
    palette.info["transparency"] = 0  # index 0 is see-through
    assert rgb(palette).tolist() == [[list(BACKGROUND), [0, 255, 0]]]


def test_the_camera_orientation_is_applied():
    image = Image.new("RGB", (2, 1))
    image.putdata([(255, 0, 0), (0, 0, 255)])  # red left of blue, as stored
    buffer = io.BytesIO()
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    image.save(buffer, format="PNG", exif=exif)
    shown = rgb(Image.open(buffer))
    assert shown.shape == (2, 1, 3)  # upright: one column, red above blue
    assert shown[0, 0].tolist() == [255, 0, 0] and shown[1, 0].tolist() == [0, 0, 255]


def test_a_mode_with_no_rgb_reading_is_refused_naming_it_and_the_file(tmp_path):
    with pytest.raises(ValueError, match=r"scan\.png: cannot read an image of mode 'HSV'"):
        to_rgb(Image.new("HSV", (1, 1)), "scan.png")


def test_training_data_reads_images_through_it(tmp_path):
    Image.new("RGBA", (2, 2), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    loaded = load_record_image(tmp_path, "clear.png", tmp_path / "data.json", "r0")
    assert np.asarray(loaded).tolist() == [[list(BACKGROUND)] * 2] * 2  # not black
