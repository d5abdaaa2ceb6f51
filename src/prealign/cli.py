"""The `prealign` command: one parser, each command's options and handler in `commands/`."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .commands.analyze import add_analyze
from .commands.bench import add_bench
from .commands.convert import add_convert, add_export
from .commands.data import add_data
from .commands.evaluate import add_evaluate
from .commands.nano import add_nano
from .commands.serving import add_chat, add_serve
from .commands.smoke import add_smoke
from .commands.train import add_train

# In the order `prealign --help` lists them.
COMMANDS = (
    add_smoke,
    add_train,
    add_evaluate,
    add_export,
    add_convert,
    add_chat,
    add_serve,
    add_analyze,
    add_bench,
    add_nano,
    add_data,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prealign", description="Deep Pre-Alignment (DPA) for vision-language models."
    )
    parser.add_argument("--version", action="version", version=f"prealign {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error, not just its message"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for add in COMMANDS:
        add(commands)
    return parser


# Errors that say what was wrong with the user's input (DataError is a ValueError): their message
# is the whole story, a traceback would bury it.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"error: {err}\n(prealign --debug ... shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
