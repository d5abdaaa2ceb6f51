"""What several commands share: a parameter's default read from its owner, argument types."""

from __future__ import annotations

import argparse
import inspect
from collections.abc import Callable
from typing import Any


def default_of(function: Callable, parameter: str) -> Any:
    """The default of `function`'s `parameter`: a command offers the library's default, never its own copy."""
    default = inspect.signature(function).parameters[parameter].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{function.__qualname__}({parameter}) has no default")
    return default


def int_list(text: str) -> list[int]:
    """A comma-separated list of integers (`0,1,2`)."""
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def distinct_names(names: list[str] | None, folders: list[str]) -> list[str]:
    """A name per model folder (default: the folders' names), all distinct."""
    names = names or [str(folder).rstrip("/").split("/")[-1] for folder in folders]
    if len(names) != len(folders) or len(set(names)) != len(names):
        raise ValueError(f"give one distinct name per model folder; got {names} for {len(folders)} folders")
    return names
