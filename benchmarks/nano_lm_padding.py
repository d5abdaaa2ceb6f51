"""Nano LM pre-training with padded and with packed batches, side by side in one run.

The corpus mixes scenes of 1-4 objects, arithmetic and facts, so sequences range from ~12 to
~65 tokens and a plainly padded batch is mostly padding. Both arms train the same model from the
same init on the same batches of examples (packing only rearranges them into rows, with the
same loss), under bf16 autocast as the Trainer runs them; the table shows the padding and the
time per step.

    python benchmarks/nano_lm_padding.py [--size perceiver|target] [--steps 200] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm
from transformers import Qwen3ForCausalLM

from prealign.nano import pretraining as nb
from prealign.nano.streams import CorpusStream
from prealign.nano.tokenizer import nano_tokenizer


def run(size: str, steps: int, batch: int, row_length: int | None, tokenizer) -> dict[str, float]:
    examples = list(CorpusStream(tokenizer, seed=0, total=steps * batch))
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(nb.lm_config(nb.LM_SIZES[size], tokenizer))
    model.config.use_cache = False  # as pre-training runs it
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    real = padded = 0
    elapsed = 0.0
    for step in tqdm(range(steps), desc=f"{size} {'packed' if row_length else 'padded'}", leave=False):
        examples_now = examples[step * batch : (step + 1) * batch]
        inputs = (
            nb.pack_lm_batch(examples_now, tokenizer.pad_token_id, row_length)
            if row_length
            else nb.pad_lm_batch(examples_now, tokenizer.pad_token_id)
        )
        real += sum(len(e["input_ids"]) for e in examples_now)
        padded += inputs["input_ids"].numel()
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        if step >= 10:  # the first steps warm up allocators and kernels
            elapsed += time.perf_counter() - start
    return {
        "useful": real / padded,
        "step_s": elapsed / (steps - 10),
        "tokens_s": real / steps / (elapsed / (steps - 10)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(nb.LM_SIZES), default="perceiver")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--row-length", type=int, default=128)
    args = parser.parse_args()
    tokenizer = nano_tokenizer()
    results = {
        name: run(args.size, args.steps, args.batch, row_length, tokenizer)
        for name, row_length in (("padded", None), (f"packed {args.row_length}", args.row_length))
    }
    print(f"{args.size} LM, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'batching':<12}{'real tokens':>13}{'ms / step':>11}{'real tokens / s':>17}")
    for name, r in results.items():
        print(f"{name:<12}{r['useful']:>12.0%}{1000 * r['step_s']:>11.1f}{r['tokens_s']:>17.0f}")
    padded, packed = results.values()
    print(f"speed-up: {padded['step_s'] / packed['step_s']:.2f}x per step (same examples, same loss)")


if __name__ == "__main__":
    main()
