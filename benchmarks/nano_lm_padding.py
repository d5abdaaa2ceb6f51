"""Nano LM pre-training with and without length buckets, side by side in one run.

The corpus mixes scenes of 1-4 objects, arithmetic and facts, so sequences range from ~12 to
~60 tokens and a plainly padded batch is mostly padding. Both arms train the same model from the
same init on the same examples (the bucketed stream is a reordering), under bf16 autocast as the
Trainer runs them; the table shows the padding and the time per step.

    python benchmarks/nano_lm_padding.py [--size perceiver|target] [--steps 200] [--batch 32]
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm
from transformers import Qwen3ForCausalLM

from prealign.data.nano.streams import CorpusStream
from prealign.data.nano.tokenizer import nano_tokenizer
from prealign.training import nano_backbones as nb


def run(size: str, steps: int, batch: int, bucketed: bool, tokenizer) -> dict[str, float]:
    stream = CorpusStream(tokenizer, seed=0, total=steps * batch, batch_size=batch if bucketed else None)
    examples = list(stream)
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(nb.lm_config(nb.LM_SIZES[size], len(tokenizer)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    real = padded = 0
    elapsed = 0.0
    for step in tqdm(range(steps), desc=f"{size} {'buckets' if bucketed else 'plain'}", leave=False):
        inputs = nb.pad_lm_batch(examples[step * batch : (step + 1) * batch], tokenizer.pad_token_id)
        real += int(inputs["attention_mask"].sum())
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
    args = parser.parse_args()
    tokenizer = nano_tokenizer()
    results = {
        name: run(args.size, args.steps, args.batch, name == "buckets", tokenizer)
        for name in ("plain", "buckets")
    }
    print(f"{args.size} LM, batch {args.batch}, {args.steps} steps, {torch.get_num_threads()} threads")
    print(f"{'batching':<10}{'real tokens':>13}{'ms / step':>11}{'real tokens / s':>17}")
    for name, r in results.items():
        print(f"{name:<10}{r['useful']:>12.0%}{1000 * r['step_s']:>11.1f}{r['tokens_s']:>17.0f}")
    print(
        f"speed-up: {results['plain']['step_s'] / results['buckets']['step_s']:.2f}x per step (same examples)"
    )


if __name__ == "__main__":
    main()
