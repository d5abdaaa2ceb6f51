"""The nano world's main job (`prealign nano run`): the paper's experiment in miniature, on a CPU.

Today it writes the world's data from a seed and starts from pre-trained backbones (the shipped
ones unless told otherwise), measuring them again against their manifest. The recipe stages
(perceiver VLM, align, finetune) and the benchmark report build on this folder.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from .backbones import format_manifest, recheck_backbones, shipped_backbones
from .data import NanoDataSpec, build_nano_data


@dataclass(frozen=True)
class NanoRun:
    out: str | Path = "runs/nano"
    seed: int = 0
    backbones: str | Path | None = None  # a `prealign nano backbones` folder; None: the shipped ones
    data: NanoDataSpec = field(default_factory=NanoDataSpec)
    check_tolerance: float = 0.05


def run_nano(run: NanoRun) -> dict:
    out = Path(run.out)
    out.mkdir(parents=True, exist_ok=True)
    spec = NanoDataSpec(**{**asdict(run.data), "seed": run.seed})
    timings: dict[str, float] = {}

    start = time.perf_counter()
    data = out / "data"
    if _data_matches(data, spec):
        print(f"data: reused {data}")
    else:
        build_nano_data(data, spec)
    timings["data_s"] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    source = Path(run.backbones) if run.backbones else shipped_backbones()
    _check_same_tokenizer(data / "tokenizer", source / "tokenizer")
    # A copy in the run folder: the training configs (configs/nano) name runs/nano/backbones.
    backbones = out / "backbones"
    if source.resolve() != backbones.resolve():
        shutil.copytree(source, backbones, dirs_exist_ok=True)
    checked = recheck_backbones(backbones, run.check_tolerance)
    timings["backbone_check_s"] = round(time.perf_counter() - start, 1)
    print(f"backbones: {source} (copied to {backbones})")
    print(format_manifest(checked))

    summary = {
        "data": str(data),
        "backbones": str(backbones),
        "backbones_from": str(source),
        "backbone_scores": checked["parts"],
        **timings,
    }
    (out / "run.json").write_text(json.dumps(summary, indent=1, sort_keys=True) + "\n")
    print(f"data {timings['data_s']:.0f} s, backbone check {timings['backbone_check_s']:.0f} s; wrote {out}")
    return summary


def _data_matches(folder: Path, spec: NanoDataSpec) -> bool:
    manifest = folder / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("spec") == asdict(spec)


def _check_same_tokenizer(data_tokenizer: Path, backbone_tokenizer: Path) -> None:
    """Backbones trained with other token ids would read the data as noise: refuse, naming both."""
    if (
        AutoTokenizer.from_pretrained(str(data_tokenizer)).get_vocab()
        != AutoTokenizer.from_pretrained(str(backbone_tokenizer)).get_vocab()
    ):
        raise ValueError(
            f"the data's tokenizer ({data_tokenizer}) and the backbones' ({backbone_tokenizer}) differ; "
            "regenerate one of them with this version of prealign"
        )
