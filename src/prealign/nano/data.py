"""Write the nano world to disk as real data sets: LLaVA-format JSON + PNG folders, a text corpus,
benchmark splits with their scoring rules. Same seed, same bytes."""

from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from .language import (
    CAPTION_PROMPTS,
    QA,
    arithmetic,
    as_messages,
    caption,
    corpus_conversation,
    fact,
    scene_question,
    text_scene_question,
)
from .scenes import IMAGE_SIZE, Scene, render, sample_scene
from .tokenizer import check_vocabulary, nano_texts, nano_tokenizer

BENCHMARK_GROUPS = ("general", "reasoning", "perception", "text")


@dataclass(frozen=True)
class NanoDataSpec:
    seed: int = 0
    image_size: int = IMAGE_SIZE
    pretrain: int = 4000  # stage-1 captions
    instruct: int = 4000  # stage-2 conversations
    text_only_fraction: float = 0.1  # of instruct records, as in LLaVA's mix
    corpus: int = 10000  # text-corpus lines (chat conversations) as the LMs are pre-trained on
    questions_per_line: int = 1  # as the LM training stream asks them
    benchmark: int = 300  # items per benchmark group
    max_objects: int = 4


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")


class _ImageWriter:
    def __init__(self, root: Path, split: str, size: int):
        self.root, self.split, self.size, self.count = root, split, size, 0

    def __call__(self, scene: Scene) -> str:
        relative = f"{self.split}/{self.count:06d}.png"
        self.count += 1
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene, self.size).save(path, format="PNG", optimize=False)
        return relative


def _turn(question: str, answer: str, image: bool = False) -> list[dict]:
    return [
        {"from": "human", "value": ("<image>\n" if image else "") + question},
        {"from": "gpt", "value": answer},
    ]


def build_pretrain(spec: NanoDataSpec, rng: random.Random, images: _ImageWriter) -> list[dict]:
    records = []
    for i in tqdm(range(spec.pretrain), desc="pretrain captions", unit="img"):
        scene = sample_scene(rng, max_objects=spec.max_objects)
        prompt = rng.choice(CAPTION_PROMPTS)
        records.append(
            {
                "id": f"pretrain_{i:06d}",
                "image": images(scene),
                "conversations": _turn(prompt, caption(scene), image=True),
            }
        )
    return records


def build_instruct(spec: NanoDataSpec, rng: random.Random, images: _ImageWriter) -> list[dict]:
    records = []
    for i in tqdm(range(spec.instruct), desc="instruction data", unit="rec"):
        if rng.random() < spec.text_only_fraction:
            qa = rng.choice(
                [
                    arithmetic(rng, held_out=False),
                    fact(rng),
                    text_scene_question(sample_scene(rng, max_objects=spec.max_objects), rng),
                ]
            )
            records.append({"id": f"instruct_{i:06d}", "conversations": _turn(qa.question, qa.answer)})
            continue
        scene = sample_scene(rng, max_objects=spec.max_objects)
        distractors = [sample_scene(rng, max_objects=spec.max_objects) for _ in range(3)]
        turns = []
        for t in range(rng.randint(1, 3)):
            qa = scene_question(scene, rng, distractors)
            turns += _turn(qa.question, qa.answer, image=t == 0)
        records.append({"id": f"instruct_{i:06d}", "image": images(scene), "conversations": turns})
    return records


def corpus_line(rng: random.Random, spec: NanoDataSpec) -> str:
    """One JSON line of LM pre-training text (`{"messages": [...]}`, the chat format of the
    tokenizer's template), from the generator the backbones' training stream draws from."""
    turns = corpus_conversation(rng, spec.max_objects, spec.questions_per_line)
    return json.dumps({"messages": as_messages(turns)})


def build_benchmarks(spec: NanoDataSpec, rng: random.Random, images: _ImageWriter) -> dict[str, list[dict]]:
    """Held-out items per group, each with its answer and scoring rule."""
    groups: dict[str, list[dict]] = {g: [] for g in BENCHMARK_GROUPS}
    with tqdm(total=spec.benchmark * len(BENCHMARK_GROUPS), desc="benchmarks", unit="item") as bar:
        while any(len(items) < spec.benchmark for items in groups.values()):
            scene = sample_scene(rng, max_objects=spec.max_objects)
            distractors = [sample_scene(rng, max_objects=spec.max_objects) for _ in range(3)]
            qa = scene_question(scene, rng, distractors)
            if len(groups[qa.group]) < spec.benchmark:
                groups[qa.group].append(
                    _bench_item(qa, f"{qa.group}_{len(groups[qa.group]):04d}", images(scene))
                )
                bar.update()
            if len(groups["text"]) < spec.benchmark:
                text_qa = rng.choice(
                    [arithmetic(rng, held_out=True), text_scene_question(scene, rng), fact(rng)]
                )
                groups["text"].append(_bench_item(text_qa, f"text_{len(groups['text']):04d}", None))
                bar.update()
    return groups


def _bench_item(qa: QA, item_id: str, image: str | None) -> dict:
    item = {"id": item_id, **asdict(qa)}
    if image is not None:
        item["image"] = image
    return item


def build_nano_data(out_dir: str | Path, spec: NanoDataSpec | None = None) -> dict[str, Path]:
    """Generate everything under `out_dir` (the default spec unless given); returns the paths."""
    spec = spec or NanoDataSpec()
    out = Path(out_dir)
    image_root = out / "images"
    # Independent streams per split, so changing one size never changes another split's content.
    streams = {
        name: random.Random(f"{spec.seed}/{name}") for name in ("pretrain", "instruct", "corpus", "bench")
    }
    paths = {
        "images": image_root,
        "pretrain": out / "pretrain.json",
        "instruct": out / "instruct.json",
        "corpus": out / "corpus.jsonl",
        "manifest": out / "manifest.json",
    }
    write_json(
        paths["pretrain"],
        build_pretrain(spec, streams["pretrain"], _ImageWriter(image_root, "pretrain", spec.image_size)),
    )
    write_json(
        paths["instruct"],
        build_instruct(spec, streams["instruct"], _ImageWriter(image_root, "instruct", spec.image_size)),
    )
    lines = [
        corpus_line(streams["corpus"], spec)
        for _ in tqdm(range(spec.corpus), desc="text corpus", unit="line")
    ]
    paths["corpus"].write_text("\n".join(lines) + "\n")
    benchmarks = build_benchmarks(spec, streams["bench"], _ImageWriter(image_root, "bench", spec.image_size))
    for group, items in benchmarks.items():
        paths[f"bench_{group}"] = out / "bench" / f"{group}.json"
        write_json(paths[f"bench_{group}"], items)
    paths["tokenizer"] = out / "tokenizer"
    tokenizer = nano_tokenizer()
    check_vocabulary(tokenizer, nano_texts(paths))
    tokenizer.save_pretrained(paths["tokenizer"])
    files = {k: str(v.relative_to(out)) for k, v in paths.items() if k != "manifest"}
    write_json(paths["manifest"], {"spec": asdict(spec), "files": files})
    return paths
