"""`prealign bench`: the models to time - a preset built here, or saved folders - each baseline
with transformers' Llava beside it, timed side by side by `analysis.speed`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from ..analysis.speed import PEER, BenchSettings, Contender, format_bench, run_bench
from ..assembly import ModelSettings, build_model_and_processor, load_saved
from ..assembly.settings import DTYPES
from ..export import as_transformers_llava
from ..nano.backbones import shipped_backbones
from ..tiny import tiny_model
from .common import distinct_names

PRESETS = ("tiny", "nano")
# transformers' attention implementations that every part of a prealign model supports.
ATTENTION_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2", "flex_attention")


def preset_contenders(preset: str) -> list[Contender]:
    """`tiny`: random-init tiny parts (seconds); `nano`: the shipped nano backbones assembled as
    the baseline and as DPA (an untrained perceiver: the same architecture, so the same cost)."""
    if preset == "tiny":
        pairs = {"baseline": tiny_model("baseline"), "dpa": tiny_model("dpa")}
    elif preset == "nano":
        parts = shipped_backbones()
        vision, text, perceiver = (str(parts / name) for name in ("vit", "lm_target", "lm_perceiver"))
        pairs = {
            "baseline": build_model_and_processor(
                ModelSettings("baseline", vision=vision, text=text, dtype="float32")
            ),
            "dpa": build_model_and_processor(
                ModelSettings(
                    "dpa_untrained_perceiver", vision=vision, text=text, perceiver=perceiver, dtype="float32"
                )
            ),
        }
    else:
        raise ValueError(f"unknown bench preset {preset!r}; known: {', '.join(PRESETS)}")
    return with_peers([Contender(name, model, processor) for name, (model, processor) in pairs.items()])


def folder_contenders(folders: list[str], names: list[str] | None = None) -> list[Contender]:
    """Saved prealign model folders (with their processors); the first is the reference."""
    names = distinct_names(names, folders)
    return with_peers(
        [Contender(name, *load_saved(folder)) for name, folder in zip(names, folders, strict=True)]
    )


def with_peers(contenders: list[Contender]) -> list[Contender]:
    """The contenders, each baseline with an LLaVA-1.5 projector followed by its transformers Llava."""
    out = []
    for c in contenders:
        out.append(c)
        config = c.model.config
        if not config.uses_perceiver and config.projector_type == "mlp2x_gelu":
            peer = as_transformers_llava(c.model)
            out.append(Contender(f"{c.name}: {PEER}", peer, c.processor, trains=False, peer_of=c.name))
    return out


def bench_command(args: argparse.Namespace) -> int:
    """Speed side by side: the baseline, DPA and transformers' Llava, interleaved, medians and ratios."""
    contenders = folder_contenders(args.models, args.names) if args.models else preset_contenders(args.preset)
    settings = BenchSettings(
        repeats=args.repeats,
        new_tokens=args.new_tokens,
        train_batch=args.train_batch,
        compile_decode=args.compile,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
    )
    result = run_bench(contenders, settings, progress=lambda rounds: tqdm(rounds, desc="bench rounds"))
    print(format_bench(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
        print(f"written to {args.json}")
    return 0


def add_bench(commands: argparse._SubParsersAction) -> None:
    defaults = BenchSettings()
    p = commands.add_parser(
        "bench",
        help="speed side by side: prefill, first token, decode, training step; baseline vs DPA vs Llava",
    )
    p.add_argument("--preset", choices=PRESETS, default=PRESETS[0], help="models to build (without --models)")
    p.add_argument(
        "--models", nargs="+", help="saved model folders instead of a preset; the first is the reference"
    )
    p.add_argument("--names", nargs="+", help="a name per model folder (default: the folder names)")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed rounds (medians)")
    p.add_argument("--new-tokens", type=int, default=defaults.new_tokens, help="tokens per generate")
    p.add_argument("--train-batch", type=int, default=defaults.train_batch, help="samples per train step")
    p.add_argument("--compile", action="store_true", help="also time generation under torch.compile")
    p.add_argument(
        "--device", default=defaults.device, help="where every model runs (cpu, cuda, cuda:1, ...)"
    )
    p.add_argument("--dtype", default=defaults.dtype, choices=DTYPES)
    p.add_argument(
        "--attn-implementation",
        choices=ATTENTION_IMPLEMENTATIONS,
        help="attention for every part of every model (default: each keeps its own)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(run=bench_command)
