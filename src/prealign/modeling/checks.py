"""When the model's input checks run.

The checks that count image positions read a tensor back to the host (`int(mask.sum())`), which
splits a `torch.compile` graph. Eager calls keep them, with their clear errors; compiled ones
skip them, so the hot path stays one graph (the inputs are the processor's, checked once).
"""

from __future__ import annotations

import torch


def eager_checks() -> bool:
    """True outside `torch.compile` tracing: the host-syncing input checks run."""
    return not torch.compiler.is_compiling()
