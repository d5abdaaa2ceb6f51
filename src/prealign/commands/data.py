"""`prealign data check`: LLaVA-format files validated before a run trains on them."""

from __future__ import annotations

import argparse
import json

from ..data.check import ERROR_CLASSES, check_data, format_report, processor_for_check
from .common import default_of


def data_check_command(args: argparse.Namespace) -> int:
    """Validate LLaVA-format files; exit 1 if any error class not tolerated is present."""
    processor = processor_for_check(args.tokenizer, args.image_tokens)
    report = check_data(
        args.files,
        processor,
        image_root=args.image_root,
        max_length=args.max_length,
        show=args.show,
        prompt_format=args.format,
        progress=not args.json,
        allow_outside_root=args.allow_outside_root,
    )
    tolerate = set(args.tolerate)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, tolerate))
    errors = report.errors(tolerate)
    if errors and not args.json:
        print(f"\nFAILED: {', '.join(f'{k}={v}' for k, v in errors.items())}")
    return 1 if errors else 0


def add_data(commands: argparse._SubParsersAction) -> None:
    data = commands.add_parser("data", help="data set tools").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("check", help="validate LLaVA-format JSON/JSONL files before training on them")
    p.add_argument("files", nargs="+", help="JSON or JSONL record files")
    p.add_argument(
        "--image-root", help="folder the records' image paths are relative to (default: the file's)"
    )
    p.add_argument(
        "--tokenizer", required=True, help="a tokenizer folder/hub id, or a saved PrealignProcessor"
    )
    p.add_argument("--image-tokens", type=int, help="feature positions per image (N); read from a processor")
    p.add_argument("--max-length", type=int, help="truncation length the training run will use")
    p.add_argument(
        "--format",
        choices=["chat", "plain"],
        default=default_of(check_data, "prompt_format"),
        help="plain: LLaVA stage-1 captions",
    )
    p.add_argument(
        "--show",
        type=int,
        default=default_of(check_data, "show"),
        metavar="K",
        help="print K samples with supervised [[spans]]",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths outside --image-root (absolute, ../, symlinks out of it)",
    )
    p.add_argument(
        "--tolerate", nargs="*", default=[], choices=ERROR_CLASSES, help="error classes not to fail on"
    )
    p.set_defaults(run=data_check_command)
