"""`prealign nano`: the nano world's data, its backbones, and the main job (`nano run`)."""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from transformers import AutoTokenizer

from ..nano import NanoDataSpec, backbones, build_nano_data
from ..nano.pretraining import LM_SIZES
from ..nano.protocol import DEFAULT_PRESET, PRESETS, NanoProtocol, run_protocol
from ..nano.stages import CONFIG_ROOT
from .common import default_of, int_list

SPEC_SIZES = ("image_size", "pretrain", "instruct", "corpus", "benchmark")  # NanoDataSpec's, as options


def nano_data_command(args: argparse.Namespace) -> int:
    """Generate the nano world's data sets, benchmarks, text corpus and tokenizer."""
    sizes = {name: getattr(args, name) for name in SPEC_SIZES if getattr(args, name) is not None}
    start = time.perf_counter()
    paths = build_nano_data(args.out, NanoDataSpec(**{**sizes, "seed": args.seed}))
    print(f"nano world written to {args.out} in {time.perf_counter() - start:.1f} s:")
    for name, path in paths.items():
        print(f"  {name:<18}{path}")
    return 0


def nano_pretrain_command(args: argparse.Namespace) -> int:
    """Pre-train one nano backbone from the world's tokenizer and print how much it learned."""
    tokenizer = AutoTokenizer.from_pretrained(str(Path(args.data) / "tokenizer"))
    budget = backbones.BackboneBudget()  # the shipped backbones' settings
    start = time.perf_counter()
    if args.nano_command == "pretrain-vit":
        backbones.pretrain_vit_part(tokenizer, Path(args.out), args.seed, budget, steps=args.steps)
        result = backbones.evaluate_vit(args.out)
        print(
            f"image->caption top-1 {result['top1']:.2f} (chance {result['chance']:.2f}); "
            f"held-out loss {result['loss']:.3f}"
        )
    else:
        if args.row_length is not None:  # 0: padded batches
            budget = dataclasses.replace(budget, lm_row_length=args.row_length or None)
        backbones.pretrain_lm_part(
            tokenizer, Path(args.out), args.seed, budget, args.size, steps=args.steps, lr=args.lr
        )
        # Score the saved checkpoint, as the manifest does: the model the Trainer leaves in memory
        # still runs under its bf16 autocast, and near-tie answers flip (spatial 0.55 vs 0.65).
        print(backbones.format_lm_scores(backbones.evaluate_language_model(args.out, budget.eval_per_kind)))
    print(f"trained in {time.perf_counter() - start:.0f} s; saved to {args.out}")
    return 0


def nano_backbones_command(args: argparse.Namespace) -> int:
    """Tokenizer and every nano backbone, with a manifest of how they were made and what they score."""
    budget = backbones.TINY_BUDGET if args.tiny else backbones.BackboneBudget()
    manifest = backbones.build_backbones(args.out, seed=args.seed, budget=budget, jobs=args.jobs)
    print(backbones.format_manifest(manifest))
    return 0


def nano_run_command(args: argparse.Namespace) -> int:
    """The main job: the paper's experiment in miniature, cached and resumable, ending in a report."""
    preset = PRESETS[args.preset]
    protocol = NanoProtocol(
        out=Path(args.out),
        preset=args.preset,
        variants=tuple(args.variants or preset["variants"]),
        seeds=tuple(args.seeds or preset["seeds"]),
        backbones=Path(args.backbones) if args.backbones else None,
        **({"configs": Path(args.configs)} if args.configs else {}),
        check_tolerance=args.tolerance,
        train_perceiver=args.train_perceiver,
        verbose=args.verbose,
    )
    run_protocol(protocol)
    return 0


def add_nano(commands: argparse._SubParsersAction) -> None:
    nano = commands.add_parser("nano", help="the nano world")
    nano = nano.add_subparsers(dest="nano_command", required=True)
    shipped_seed = default_of(backbones.build_backbones, "seed")

    p = nano.add_parser("data", help="generate the nano world's data sets, benchmarks, corpus and tokenizer")
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=NanoDataSpec().seed)
    for name in SPEC_SIZES:
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help="default: see NanoDataSpec")
    p.set_defaults(run=nano_data_command)

    p = nano.add_parser(
        "run",
        help="the main job: the paper's experiment in miniature (data, the shipped backbones and "
        "perceiver VLM, the baseline and the ablation rows through both stages, benchmarks, analyses, "
        "report)",
    )
    p.add_argument("out", nargs="?", default=CONFIG_ROOT, help=f"output folder (default: {CONFIG_ROOT})")
    p.add_argument(
        "--preset",
        choices=list(PRESETS),
        default=DEFAULT_PRESET,
        help="quick: baseline and DPA, one seed (minutes); full: every ablation row, seeds 0,1,2",
    )
    p.add_argument("--seeds", type=int_list, help="comma-separated seeds (default: the preset's)")
    p.add_argument(
        "--variants", nargs="+", help="the models to train (default: the preset's; baseline needed)"
    )
    p.add_argument("--backbones", help="a folder from `prealign nano backbones` (default: the shipped ones)")
    p.add_argument("--configs", help="the nano recipe's YAML folder (default: the shipped configs/nano)")
    p.add_argument(
        "--tolerance",
        type=float,
        default=default_of(NanoProtocol, "check_tolerance"),
        help="allowed drift of a re-checked score from the manifest",
    )
    p.add_argument(
        "--train-perceiver",
        action="store_true",
        help="train the perceiver VLM on each seed instead of starting DPA's rows from the shipped one",
    )
    p.add_argument(
        "--verbose", action="store_true", help="each unit's output (Trainer logs, progress bars) shown"
    )
    p.set_defaults(run=nano_run_command)

    p = nano.add_parser(
        "backbones", help="tokenizer + ViT + perceiver LM + target LM + perceiver VLM, with a manifest"
    )
    p.add_argument("out", help="output folder (finished parts in it are reused)")
    p.add_argument("--seed", type=int, default=shipped_seed)
    p.add_argument("--tiny", action="store_true", help="smallest sizes and a few steps (tests, smoke runs)")
    p.add_argument(
        "--jobs",
        type=int,
        default=default_of(backbones.build_backbones, "jobs"),
        help="parts made at a time, each in its own process (2 on a 2-core CPU)",
    )
    p.set_defaults(run=nano_backbones_command)

    budget = backbones.BackboneBudget()
    for name, what in (("pretrain-lm", "a Qwen3 LM on the nano corpus"), ("pretrain-vit", "a SigLIP tower")):
        p = nano.add_parser(name, help=f"pre-train {what} (resumes from its last checkpoint)")
        p.add_argument("data", help="a folder written by `prealign nano data` (for its tokenizer)")
        p.add_argument("--out", required=True)
        p.add_argument("--steps", type=int)
        p.add_argument("--seed", type=int, default=shipped_seed)
        if name == "pretrain-lm":
            p.add_argument("--size", choices=list(LM_SIZES), default=budget.perceiver_size)
            p.add_argument("--lr", type=float, help="peak learning rate (default: the shipped LM's)")
            p.add_argument(
                "--row-length",
                type=int,
                help="pack each batch's examples into rows of this many tokens: the padded batch's "
                f"loss, 1.3-1.6x faster (default: the shipped LMs' {budget.lm_row_length}; 0 pads each "
                "batch instead)",
            )
        p.set_defaults(run=nano_pretrain_command)
