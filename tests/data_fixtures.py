"""LLaVA-format fixture files, written exactly as the public data sets are laid out."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import random_image

PRETRAIN = [  # blip_laion_cc_sbu_558k.json style: the placeholder at the end or the start of the prompt
    {
        "id": "004539375",
        "image": "00453/004539375.jpg",
        "conversations": [
            {"from": "human", "value": "Render a clear and concise summary of the photo.\n<image>"},
            {"from": "gpt", "value": "select luxury furniture 3 - inch gel memory foam mattress topper"},
        ],
    },
    {
        "id": "002239345",
        "image": "00223/002239345.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWrite a terse but informative summary of the picture."},
            {"from": "gpt", "value": "a grey watch with an army style strap"},
        ],
    },
]

INSTRUCT = [  # llava_v1_5_mix665k style: multi-turn, text-only, multi-image, a system turn
    {
        "id": "000000033471",
        "image": "coco/000000033471.jpg",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
            {"from": "gpt", "value": "The bus in the image is white and red."},
            {"from": "human", "value": "What feature can be seen on the back of the bus?"},
            {"from": "gpt", "value": "The back of the bus features an advertisement."},
        ],
    },
    {
        "id": "text_only_1",
        "conversations": [
            {"from": "human", "value": "Is 7 a prime number? Answer yes or no."},
            {"from": "gpt", "value": "yes"},
        ],
    },
    {
        "id": "multi_image_1",
        "image": ["coco/000000033471.jpg", "00223/002239345.jpg"],
        "conversations": [
            {"from": "system", "value": "You compare pictures."},
            {"from": "human", "value": "Compare <image> with <image>. Which has a bus?"},
            {"from": "gpt", "value": "The first one."},
        ],
    },
]


IMAGE_FILES = ["00453/004539375.jpg", "00223/002239345.jpg", "coco/000000033471.jpg"]


def write_images(root: Path, sizes: list[tuple[int, int]] | None = None) -> None:
    """The fixture's three images, all (40, 48) pixels (height, width) unless `sizes` says."""
    for i, rel in enumerate(IMAGE_FILES):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        random_image(i, *([sizes[i]] if sizes else [])).save(root / rel)


def write_llava_set(folder: Path, sizes: list[tuple[int, int]] | None = None) -> dict[str, Path]:
    """pretrain.json (a JSON list), instruct.jsonl (JSONL) and an image folder."""
    write_images(folder / "images", sizes)
    (folder / "pretrain.json").write_text(json.dumps(PRETRAIN, indent=1))
    (folder / "instruct.jsonl").write_text("\n".join(json.dumps(r) for r in INSTRUCT) + "\n")
    return {
        "pretrain": folder / "pretrain.json",
        "instruct": folder / "instruct.jsonl",
        "images": folder / "images",
    }


def assistant_text(record: dict, eos: str) -> str:
    return "".join(t["value"] + eos for t in record["conversations"] if t["from"] == "gpt")
