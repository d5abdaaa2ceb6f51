"""`prealign smoke`: every variant's model contract on tiny random-init models, no downloads."""

from __future__ import annotations

import tempfile
import time

import numpy as np
import torch
from PIL import Image
from transformers.utils import logging as hf_logging

from .modeling import PrealignForConditionalGeneration
from .tiny import tiny_model
from .variants import VARIANTS


def run_smoke(variants: list[str], new_tokens: int = 8, seed: int = 0) -> int:
    """Build tiny models of each variant from parts and exercise the whole model contract.

    Prints a row per variant; returns how many failed (save/load not exact, or cached
    generation differs from uncached).
    """
    hf_logging.disable_progress_bar()  # one bar per save/load would bury the table
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images = [Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)) for _ in range(3)]
    header = f"{'variant':<24}{'params':>10}{'loss':>8}{'gen tok/s':>11}  save/load  cached==uncached"
    print(header)
    print("-" * len(header))
    failures = 0
    for name in variants:
        variant = VARIANTS[name]
        model, processor = tiny_model("dpa" if variant.uses_perceiver else "baseline", **variant.config)
        prompts = [
            processor.apply_chat_template([{"role": "user", "content": "<image>\nWhat colour is it?"}]),
            processor.apply_chat_template([{"role": "user", "content": "Compare <image> and <image>."}]),
            processor.apply_chat_template([{"role": "user", "content": "How many shapes are there?"}]),
        ]
        batch = processor(
            text=prompts,
            images=images,
            instructions=["What colour?", "Compare.", "Count."],
            padding_side="left",
        )
        loss = model(**batch, labels=batch["input_ids"]).loss
        loss.backward()
        model.eval()
        start = time.perf_counter()
        cached = model.generate(**batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens)
        tok_s = cached.shape[0] * new_tokens / (time.perf_counter() - start)
        uncached = model.generate(
            **batch, max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=False
        )
        with tempfile.TemporaryDirectory() as folder, torch.no_grad():
            model.save_pretrained(folder)
            loaded = PrealignForConditionalGeneration.from_pretrained(folder).eval()
            round_trip = torch.equal(model(**batch).logits, loaded(**batch).logits)
        same = torch.equal(cached, uncached)
        failures += not (round_trip and same)
        n_params = sum(p.numel() for p in model.parameters())
        print(
            f"{name:<24}{n_params:>10,}{loss.item():>8.3f}{tok_s:>11.1f}  "
            f"{'exact' if round_trip else 'DIFFERS':<9}  {'yes' if same else 'NO'}"
        )
    print(f"\n{len(variants) - failures}/{len(variants)} variants passed the smoke run.")
    return failures
