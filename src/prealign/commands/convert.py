"""`prealign convert official` and `prealign export`: other layouts in, standalone parts out."""

from __future__ import annotations

import argparse

from ..export import EXPORTS, export_part
from ..official import PART_FIELDS, convert_official


def convert_official_command(args: argparse.Namespace) -> int:
    """The authors' released checkpoint as a prealign folder."""
    overrides = {part: getattr(args, part) for part in PART_FIELDS}
    print(f"written to {convert_official(args.source, args.out, **overrides)}")
    return 0


def export_command(args: argparse.Namespace) -> int:
    """A part of a saved model as a standalone Hugging Face folder."""
    print(f"{args.part}: written to {export_part(args.model, args.part, args.out)}")
    return 0


def add_convert(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert", help="other layouts as prealign folders")
    convert = convert.add_subparsers(dest="layout", required=True)
    p = convert.add_parser(
        "official",
        help="the authors' released DPA (THUMAI-Lab/Deep-Pre-Alignment, e.g. team6013/DPA-4B) as a prealign "
        "folder that loads with AutoModelForImageTextToText and prompts as their evaluation does",
    )
    p.add_argument("source", help="the authors' checkpoint folder (config.json, pytorch_model*.bin)")
    p.add_argument("out", help="output folder")
    for part, what in (
        ("vit", "the Qwen2.5-VL checkpoint whose ViT config it names (perceiver_config.vit_path)"),
        ("llm", "the perceiver LM's config (perceiver_config.llm_path, Qwen3-0.6B)"),
        ("thinker", "the target LM's config (thinker_name_or_path, Qwen3-4B)"),
        ("thinker_tokenizer", "the target's tokenizer (t_tokenizer_name_or_path)"),
        ("perceiver_processor", "the perceiver's processor (p_processor_name_or_path, Qwen2.5-VL's)"),
    ):
        p.add_argument(f"--{part.replace('_', '-')}", help=f"a local folder for {what}; default: as named")
    p.set_defaults(run=convert_official_command)


def add_export(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "export",
        help="write a part of a saved model as a standalone HF folder (target-lm: a causal LM; "
        "perceiver: a DPA model's perceiver as a small VLM)",
    )
    p.add_argument("model", help="a saved model folder (with its processor)")
    p.add_argument("out", help="output folder")
    p.add_argument("--part", choices=EXPORTS, default=EXPORTS[0])
    p.set_defaults(run=export_command)
