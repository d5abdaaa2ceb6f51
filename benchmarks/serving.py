"""`prealign serve` under concurrent clients: requests batched together vs answered one at a time.

The same server (tiny random DPA model, CPU, its end token suppressed), the same requests - one
image and a question, 16 new tokens, greedy - from 1, 4 and 16 clients at once, each sending
`--requests` one after another;
`--max-batch 16` against `--max-batch 1`, side by side in one run. Prints requests per second and
the median and 95th-percentile latency. Then turns: one client asks for a long reply (`--long`
tokens) while 4 others send their short requests, replies taking turns of 16 tokens against each
running to its end (`--slice-tokens 0`); prints the short requests' latencies and the long one's.

    python benchmarks/serving.py [--requests 4] [--tokens 16] [--long 400]
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import statistics
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image

from prealign.serving.conversation import Conversations
from prealign.serving.limits import RequestLimits
from prealign.serving.openai_server import create_app, running
from prealign.tiny import tiny_model


def request_body(tokens: int, image: bool = True) -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}] if image else []
    content.append({"type": "text", "text": "what is this?"})
    return json.dumps({"messages": [{"role": "user", "content": content}], "max_tokens": tokens}).encode()


def load(url: str, body: bytes, clients: int, requests: int) -> dict[str, float]:
    def client(_) -> list[float]:
        latencies = []
        for _ in range(requests):
            start = time.perf_counter()
            request = urllib.request.Request(
                f"{url}/v1/chat/completions", body, {"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=600) as response:
                assert response.status == 200
                response.read()
            latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = sorted(t for times in pool.map(client, range(clients)) for t in times)
    elapsed = time.perf_counter() - start
    return {
        "requests/s": len(latencies) / elapsed,
        "p50 s": statistics.median(latencies),
        "p95 s": latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
    }


def with_long_request(url: str, body: bytes, long_body: bytes, clients: int, requests: int) -> dict:
    """Short requests from `clients` clients while one long request runs (started first)."""
    with ThreadPoolExecutor(1) as pool:
        long = pool.submit(load, url, long_body, 1, 1)
        time.sleep(0.2)  # the long reply has begun
        short = load(url, body, clients, requests)
        long_s = long.result()["p50 s"]
    return {"short p50 s": short["p50 s"], "short p95 s": short["p95 s"], "long s": long_s}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=4, help="requests per client, one after another")
    parser.add_argument("--tokens", type=int, default=16, help="new tokens per request")
    parser.add_argument("--long", type=int, default=400, help="new tokens of the long request")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    model, processor = tiny_model("dpa")
    # The random model may end a reply anywhere; without its end token every reply runs to its
    # max_tokens, so each request asks for a known amount of work.
    model.generation_config.suppress_tokens = [processor.tokenizer.eos_token_id]
    body = request_body(args.tokens)
    rows = []
    for clients in (1, 4, 16):
        for max_batch in (1, 16):
            limits = RequestLimits(max_batch=max_batch)
            with running(create_app(Conversations(model, processor, 0), "tiny", limits=limits)) as url:
                load(url, body, 1, 1)  # warm-up
                rows.append((clients, max_batch, load(url, body, clients, args.requests)))
    print(f"{'clients':>7}  {'max batch':>9}  {'requests/s':>10}  {'p50 s':>7}  {'p95 s':>7}")
    for clients, max_batch, result in rows:
        print(
            f"{clients:>7}  {max_batch:>9}  {result['requests/s']:>10.2f}  {result['p50 s']:>7.3f}  "
            f"{result['p95 s']:>7.3f}"
        )
    long_body = request_body(args.long, image=False)
    print(f"\n{'slice tokens':>12}  {'short p50 s':>11}  {'short p95 s':>11}  {'long s':>7}")
    for slice_tokens in (16, 0):
        limits = RequestLimits(slice_tokens=slice_tokens)
        with running(create_app(Conversations(model, processor, 0), "tiny", limits=limits)) as url:
            load(url, body, 1, 1)  # warm-up
            result = with_long_request(url, body, long_body, 4, args.requests)
        print(
            f"{slice_tokens:>12}  {result['short p50 s']:>11.3f}  {result['short p95 s']:>11.3f}  "
            f"{result['long s']:>7.3f}"
        )


if __name__ == "__main__":
    main()
