"""`prealign chat` and `prealign serve`: talking to a saved model, in the terminal or over HTTP."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..assembly import load_saved
from ..serving.conversation import DEFAULT_FEATURE_CACHE_IMAGES, DEFAULT_MAX_NEW_TOKENS, Conversations
from ..serving.limits import DEFAULT_HOST, DEFAULT_PORT, RequestLimits
from ..serving.terminal import run_chat
from .common import default_of


def _conversations(args: argparse.Namespace) -> Conversations:
    return Conversations(*load_saved(args.model), args.feature_cache_images)


def chat_command(args: argparse.Namespace) -> int:
    """Talk to a saved model in the terminal."""
    run_chat(_conversations(args), sys.stdin, sys.stdout, args.max_new_tokens, args.temperature, args.system)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Serve a saved model over an OpenAI-compatible HTTP API."""
    from ..serving.openai_server import serve  # needs the optional FastAPI and uvicorn (prealign[serve])

    limits = RequestLimits(
        max_body_bytes=args.max_body_mb * 2**20,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_tokens=args.max_tokens,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        max_batch=args.max_batch,
        slice_tokens=args.slice_tokens,
    )
    name = args.name or Path(args.model).name
    serve(_conversations(args), name, args.host, args.port, args.max_new_tokens, limits)
    return 0


def _conversation_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a saved model folder (with its processor)")
    p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument(
        "--feature-cache-images",
        type=int,
        default=DEFAULT_FEATURE_CACHE_IMAGES,
        help="images whose features are kept for later turns (0: none)",
    )


def add_chat(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser("chat", help="talk to a saved model in the terminal (multi-turn, images by path)")
    _conversation_arguments(p)
    p.add_argument(
        "--temperature", type=float, default=default_of(run_chat, "temperature"), help="0: greedy decoding"
    )
    p.add_argument("--system", default=None, help="a system message that starts the conversation")
    p.set_defaults(run=chat_command)


def add_serve(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "serve", help="serve a saved model as an OpenAI-compatible /v1/chat/completions endpoint"
    )
    _conversation_arguments(p)
    p.add_argument("--host", default=DEFAULT_HOST)
    p.add_argument("--port", type=int, default=DEFAULT_PORT)
    p.add_argument("--name", default=None, help="the model's name in the API (default: the folder's name)")
    limits = RequestLimits()
    p.add_argument(
        "--max-body-mb", type=int, default=limits.max_body_bytes // 2**20, help="request body size"
    )
    p.add_argument(
        "--max-image-pixels", type=int, default=limits.max_image_pixels, help="pixels of one image"
    )
    p.add_argument("--max-images", type=int, default=limits.max_images, help="images in one request")
    p.add_argument(
        "--max-tokens", type=int, default=limits.max_tokens, help="new tokens one request may ask for"
    )
    p.add_argument(
        "--max-queue", type=int, default=limits.max_queue, help="requests admitted at once (then 503)"
    )
    p.add_argument(
        "--timeout", type=float, default=limits.timeout_s, help="seconds a request may wait and generate"
    )
    p.add_argument(
        "--max-batch", type=int, default=limits.max_batch, help="greedy requests answered together"
    )
    p.add_argument(
        "--slice-tokens",
        type=int,
        default=limits.slice_tokens,
        help="new tokens a reply generates before the next gets its turn (0: each runs to its end)",
    )
    p.set_defaults(run=serve_command)
