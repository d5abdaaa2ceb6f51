"""The KV cache's name, as the installed transformers spells it.

transformers 5.24 renamed the cache field of model outputs and the cache argument of `forward`
from `past_key_values` to `cache` (the old name still works, with a deprecation warning, until
5.40). We follow whichever the installed version uses, so our own calls raise no warning on the
newest release and still work on the oldest one the project declares.
"""

from __future__ import annotations

from dataclasses import fields

from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

_OUTPUT_FIELDS = {f.name for f in fields(CausalLMOutputWithPast)}
CACHE_NAME: str = "cache" if "cache" in _OUTPUT_FIELDS else "past_key_values"


def resolve_cache(cache: Cache | None, past_key_values: Cache | None) -> Cache | None:
    """The cache a caller passed under either name; both at once is ambiguous."""
    if cache is not None and past_key_values is not None:
        raise ValueError("Pass the KV cache as `cache` or as `past_key_values`, not both.")
    return cache if cache is not None else past_key_values


def cache_of(outputs) -> Cache | None:
    """The cache held by a model output, read by the installed version's field name."""
    return getattr(outputs, CACHE_NAME, None)
