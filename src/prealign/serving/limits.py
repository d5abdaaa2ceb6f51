"""`prealign serve`'s settings that need none of its dependencies: where it listens, what one
request may ask, how many it answers together and how replies take turns (its command line sets
each)."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"  # this machine only: a server open to the network is asked for by name
DEFAULT_PORT = 8000


@dataclass(frozen=True)
class RequestLimits:
    """Beyond each limit a request gets a 4xx naming it, before any model work."""

    max_body_bytes: int = 32 * 2**20  # the request body, images included (base64)
    max_image_pixels: int = 40_000_000  # width x height of one image, read from its header
    max_images: int = 16  # images in one request's messages
    max_tokens: int = 4096  # the most new tokens one request may ask for
    max_queue: int = 32  # requests admitted at once (waiting or answered); beyond, a 503
    timeout_s: float = 300.0  # a request's whole time: waiting for the model, then generating
    max_batch: int = 8  # greedy requests waiting together, answered in one batch (1: one at a time)
    slice_tokens: int = 16  # new tokens a reply generates before the next one gets its turn (0: all)


DEFAULT_LIMITS = RequestLimits()
