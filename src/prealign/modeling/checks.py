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


class ContextLengthError(ValueError):
    """A prompt that, with the tokens asked for, would not fit the target LM's context."""


def check_context(prompt_tokens: int, new_tokens: int, context: int) -> None:
    """The target reads at most `context` positions (its `max_position_embeddings`): past them its
    positions were never trained, and a long enough prompt stalls whoever shares the model."""
    if prompt_tokens + new_tokens > context:
        raise ContextLengthError(
            f"the prompt has {prompt_tokens} tokens and {new_tokens} new tokens were asked for: "
            f"{prompt_tokens + new_tokens} > the model's context of {context} tokens"
        )
