"""`prealign smoke`: every variant's model contract on tiny random-init models."""

from __future__ import annotations

import argparse

from ..smoke import run_smoke
from ..variants import VARIANTS
from .common import default_of


def smoke_command(args: argparse.Namespace) -> int:
    """Build tiny baseline and DPA models from parts and exercise the whole model contract."""
    return 1 if run_smoke(args.variants, args.new_tokens, args.seed) else 0


def add_smoke(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "smoke",
        help="build tiny random-init models of every variant and check forward, backward, "
        "generation and save/load (no downloads)",
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--new-tokens", type=int, default=default_of(run_smoke, "new_tokens"))
    p.add_argument("--seed", type=int, default=default_of(run_smoke, "seed"))
    p.set_defaults(run=smoke_command)
