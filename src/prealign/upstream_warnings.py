"""Upstream warnings that say nothing about the user's model, dropped where transformers logs them.

Every SigLIP config transformers 5.x loads also builds a default `SiglipConfig()`, whose default
text config fails transformers' own token-id check (bos 49406 and eos 49407 in a vocabulary of
32,000): each process that reads a SigLIP tower warns about a config no model uses. Only that
message, with those numbers, is dropped; the same check on a real config still warns.
"""

from __future__ import annotations

import logging

SIGLIP_DEFAULT_TEXT_CONFIG = (
    "(between 0 and 31999), got 49406.",
    "(between 0 and 31999), got 49407.",
)


class _DropKnown(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        known = any(numbers in message for numbers in SIGLIP_DEFAULT_TEXT_CONFIG)
        return not (message.startswith("Model config: ") and known)


def drop_known_upstream_warnings() -> None:
    """Install the filter on the logger that emits them (idempotent)."""
    logger = logging.getLogger("transformers.configuration_utils")
    if not any(isinstance(f, _DropKnown) for f in logger.filters):
        logger.addFilter(_DropKnown())
