"""`prealign train`: one stage of the recipe from a YAML settings file."""

from __future__ import annotations

import argparse

from ..training import load_settings
from ..training.run import run_stage


def train_command(args: argparse.Namespace) -> int:
    """One stage of the recipe; under torchrun every rank runs this."""
    run_stage(load_settings(args.config, args.overrides))
    return 0


def add_train(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "train", help="run one training stage from a YAML config (works under torchrun / accelerate launch)"
    )
    p.add_argument(
        "config", help="YAML settings file, or a shipped recipe's name (configs/paper-4b/dpa/stage1.yaml)"
    )
    p.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides, e.g. max_steps=10 data.max_length=2048"
    )
    p.set_defaults(run=train_command)
