"""`prealign serve MODEL`: an OpenAI-compatible chat-completions endpoint (FastAPI + uvicorn).

`POST /v1/chat/completions` takes the OpenAI request - messages whose content is a string or a
list of `text` and `image_url` parts (images as `data:` URLs; the server fetches nothing), plus
`max_tokens` / `max_completion_tokens`, `temperature` (absent or 0: greedy), `top_p`, `stop` and
`stream` - and answers in OpenAI's shape, streamed as server-sent events when asked. One model
answers every request (`batching.Batcher`: greedy requests arriving together share a batch, replies
take turns); a request that repeats the previous one's history reuses its KV cache. A request that
cannot be answered as sent gets a 400 naming the message and part, before it waits for the model.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

from PIL import Image, UnidentifiedImageError
from transformers import TextIteratorStreamer

try:
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
except ModuleNotFoundError as missing:
    raise ModuleNotFoundError(
        f"prealign serve needs FastAPI and uvicorn ({missing.name} is not installed): "
        "pip install 'prealign[serve]'"
    ) from missing

from ..images import to_rgb
from .batching import Batcher, Job
from .conversation import (
    DEFAULT_MAX_NEW_TOKENS,
    ConversationError,
    Conversations,
)
from .generation import cut_at_stop
from .limits import DEFAULT_HOST, DEFAULT_LIMITS, DEFAULT_PORT, RequestLimits

LOG = logging.getLogger("prealign.serve")


def _error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": kind}})


def decode_image_url(url: Any, where: str, max_pixels: int = RequestLimits.max_image_pixels) -> Image.Image:
    """An image from a `data:image/...;base64,...` URL, refused when its header says it has more
    than `max_pixels` pixels (before they are decoded: a small file can decode to gigabytes)."""
    if not isinstance(url, str) or not url.startswith("data:"):
        raise ConversationError(
            f"{where}: only data URLs (data:image/png;base64,...) are accepted; the server fetches nothing"
        )
    header, _, payload = url.partition(",")
    if not header.endswith(";base64") or not payload:
        raise ConversationError(f"{where}: the data URL is not base64-encoded (data:<type>;base64,<data>)")
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as error:
        raise ConversationError(f"{where}: the data URL's base64 payload is malformed ({error})") from error
    try:
        with Image.open(io.BytesIO(raw)) as image:
            width, height = image.size
            if width * height > max_pixels:
                raise ConversationError(
                    f"{where}: the image is {width}x{height} = {width * height} pixels; the server takes at "
                    f"most {max_pixels} (--max-image-pixels)"
                )
            return to_rgb(image, where)
    except Image.DecompressionBombError as error:
        raise ConversationError(f"{where}: the image is too large to decode ({error})") from error
    except (UnidentifiedImageError, OSError) as error:
        raise ConversationError(f"{where}: the data URL does not hold a readable image ({error})") from error
    except ConversationError:
        raise
    except ValueError as error:  # to_rgb: a mode with no RGB reading
        raise ConversationError(str(error)) from error


def openai_messages(messages: Any, limits: RequestLimits = DEFAULT_LIMITS) -> list[dict]:
    """OpenAI chat messages in the `Conversations` format (image parts decoded)."""
    if not isinstance(messages, list):
        raise ConversationError("messages must be a list")
    converted, images = [], 0
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ConversationError(f"messages[{i}] must be an object with role and content")
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                if isinstance(part, dict) and part.get("type") == "image_url":
                    images += 1
                    if images > limits.max_images:
                        raise ConversationError(
                            f"{where}: more than {limits.max_images} images in one request (--max-images)"
                        )
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    parts.append(
                        {"type": "image", "image": decode_image_url(url, where, limits.max_image_pixels)}
                    )
                elif isinstance(part, dict) and part.get("type") == "text":
                    parts.append({"type": "text", "text": part.get("text")})
                else:
                    kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                    raise ConversationError(f"{where}: unsupported content part {kind!r} (text or image_url)")
            content = parts
        converted.append({"role": message.get("role"), "content": content})
    return converted


def _generation_options(body: dict, default_max_tokens: int, limits: RequestLimits = DEFAULT_LIMITS) -> dict:
    if body.get("n", 1) != 1:
        raise ConversationError("n must be 1: one reply per request")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or default_max_tokens
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise ConversationError("max_tokens must be a positive integer")
    if max_tokens > limits.max_tokens:
        raise ConversationError(
            f"max_tokens is {max_tokens}; the server gives at most {limits.max_tokens} (--max-tokens)"
        )
    if not all(isinstance(s, str) for s in stop):
        raise ConversationError("stop must be a string or a list of strings")
    return {
        "max_new_tokens": max_tokens,
        "temperature": float(body.get("temperature") or 0.0),
        "top_p": float(body.get("top_p") or 1.0),
        "stop": stop,
    }


def create_app(
    conversations: Conversations,
    model_name: str,
    default_max_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> FastAPI:
    """The FastAPI app serving `conversations`' model as `model_name`; a request without
    `max_tokens` generates at most `default_max_tokens`; `limits` bound what one request may ask."""
    app = FastAPI(title="prealign", description="OpenAI-compatible chat completions for a prealign model")
    batcher = Batcher(conversations, limits.max_batch, limits.slice_tokens)
    admitted = threading.BoundedSemaphore(limits.max_queue)  # waiting or being answered

    def answer(prompt, options, streamer=None):
        """The reply, by the batcher; a request still unanswered at its time gives up."""
        job = Job(prompt, options, time.monotonic() + limits.timeout_s, streamer)
        future = batcher.submit(job)
        try:
            return future.result(timeout=limits.timeout_s)
        except FutureTimeout as error:
            future.cancel()
            raise ServerBusy(f"the request was not answered within its {limits.timeout_s:g} s") from error

    @app.middleware("http")
    async def log_request(request: Request, call_next):
        """One line per request: method, path, status, latency."""
        start = time.perf_counter()
        response = await call_next(request)
        elapsed = time.perf_counter() - start
        LOG.info("%s %s %d %.3fs", request.method, request.url.path, response.status_code, elapsed)
        return response

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": model_name}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "prealign"}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        raw = await request.body()
        if len(raw) > limits.max_body_bytes:
            return _error(
                413,
                f"the request body has {len(raw)} bytes; the server takes at most {limits.max_body_bytes}",
            )
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return _error(400, "the request body must be a JSON object")
        try:
            messages = openai_messages(body.get("messages"), limits)
            options = _generation_options(body, default_max_tokens, limits)
            prompt = await run_in_threadpool(conversations.prepare, messages, options["max_new_tokens"])
        except ConversationError as error:
            return _error(400, str(error))
        created, completion_id = int(time.time()), f"chatcmpl-{uuid.uuid4().hex}"
        if not admitted.acquire(blocking=False):
            return JSONResponse(
                status_code=503,
                headers={"Retry-After": "1"},
                content={
                    "error": {
                        "message": f"the server is full ({limits.max_queue} requests admitted); retry later",
                        "type": "overloaded",
                    }
                },
            )
        if body.get("stream"):
            chunks = _stream(answer, prompt, options, conversations, completion_id, created, model_name)
            return StreamingResponse(_releasing(chunks, admitted), media_type="text/event-stream")
        try:
            reply = await run_in_threadpool(answer, prompt, options)
        except ConversationError as error:
            raise HTTPException(400, str(error)) from error
        except ServerBusy as error:
            return JSONResponse(
                status_code=503,
                headers={"Retry-After": "1"},
                content={"error": {"message": str(error), "type": "overloaded"}},
            )
        finally:
            admitted.release()
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model_name,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.text},
                    "finish_reason": reply.finish_reason,
                }
            ],
            "usage": {
                "prompt_tokens": reply.prompt_tokens,
                "completion_tokens": reply.completion_tokens,
                "total_tokens": reply.prompt_tokens + reply.completion_tokens,
            },
        }

    return app


class ServerBusy(RuntimeError):
    """The model did not become free within a request's time."""


def _releasing(chunks: Iterator[str], admitted: threading.BoundedSemaphore) -> Iterator[str]:
    """A streamed response that gives its admission back when it ends (or the client leaves)."""
    try:
        yield from chunks
    finally:
        admitted.release()


def _stream(answer, prompt, options, conversations, completion_id, created, model_name) -> Iterator[str]:
    """Server-sent events: a role chunk, content chunks, a final chunk with the finish reason."""
    processor = conversations.processor
    streamer = TextIteratorStreamer(processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    result: dict = {}

    def run():
        try:
            result["reply"] = answer(prompt, options, streamer)
        except Exception as error:  # re-raised below, in the response's thread
            result["error"] = error
        finally:
            streamer.end()

    def event(delta: dict, finish_reason: str | None = None) -> str:
        chunk = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        return f"data: {json.dumps(chunk)}\n\n"

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield event({"role": "assistant", "content": ""})
    stop, sent, text = options["stop"], 0, ""
    hold = max((len(s) for s in stop), default=1) - 1  # a stop string may still be forming
    for piece in streamer:
        text += piece
        visible = cut_at_stop(processor.answer_text(text, complete=False), stop)
        ready = len(visible) if len(visible) < len(text) else max(sent, len(visible) - hold)
        if ready > sent:
            yield event({"content": visible[sent:ready]})
            sent = ready
    worker.join()
    if "error" in result:
        raise result["error"]
    reply = result["reply"]
    if len(reply.text) > sent:
        yield event({"content": reply.text[sent:]})
    yield event({}, reply.finish_reason)
    yield "data: [DONE]\n\n"


def serve(
    conversations: Conversations,
    model_name: str,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    default_max_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    limits: RequestLimits = DEFAULT_LIMITS,
) -> None:
    """Run the server until interrupted."""
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    uvicorn.run(create_app(conversations, model_name, default_max_tokens, limits), host=host, port=port)


@contextlib.contextmanager
def running(app: FastAPI, host: str = "127.0.0.1") -> Iterator[str]:
    """`app` served on a free port of `host` in a background thread while the block runs; gives
    its base URL (tests, benchmarks, notebooks)."""
    import socket

    import uvicorn

    with socket.socket() as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError(f"the server did not start on {host}:{port}")
        time.sleep(0.05)
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
