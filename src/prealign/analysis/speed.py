"""Speed side by side (`prealign bench`): prefill, time to first token, decode, a training step,
and a second turn (same image again: with the feature cache; a chat re-sending its history: with
the first turn's KV cache continued).

Every model is timed in one process on the same prompt and image, interleaved: each repeat runs
every model once, in an order rotated per repeat, so machine noise falls on all of them alike;
tables give medians and ratios to the first model (the baseline). A baseline is also timed as
transformers' own `LlavaForConditionalGeneration` built from its weights (the peer), after
checking that both give the same logits.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..serving.conversation import Conversations
from .cost import forward_flops, one_image_sample

QUESTION = "describe the scene."
SECOND_QUESTION = "how many objects are there?"
PEER = "llava (transformers)"


@dataclass
class Contender:
    """A model to time, the processor that makes its inputs, and how it relates to the others."""

    name: str
    model: nn.Module
    processor: object
    trains: bool = True  # time a training step (the peer is timed for inference only)
    peer_of: str | None = None  # the prealign model whose weights this peer holds


@dataclass
class BenchSettings:
    repeats: int = 5
    new_tokens: int = 32
    train_batch: int = 8
    warmup: int = 1
    compile_decode: bool = False  # also time decode under torch.compile
    # Where and how every model runs: e.g. "cuda", "bfloat16", "sdpa" for the GPU figures.
    device: str = "cpu"
    dtype: str = "float32"
    attn_implementation: str | None = None  # None: each model keeps its own


@dataclass
class BenchResult:
    settings: dict
    models: dict[str, dict] = field(default_factory=dict)  # name -> medians and counts
    ratios: dict[str, dict] = field(default_factory=dict)  # name -> metric -> ratio to the reference
    peer: dict[str, dict] = field(default_factory=dict)  # ours name -> logits diff and speed ratios

    def to_dict(self) -> dict:
        return {"settings": self.settings, "models": self.models, "ratios": self.ratios, "peer": self.peer}


def _timed(fn: Callable[[], object]) -> float:
    """Seconds of one call, with Python's garbage collector held off as `timeit` does: a collection
    landing in one call (~0.1 s with a test session's objects) would outweigh a tiny model's decode."""
    _synchronize()
    collecting = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter()
        fn()
        _synchronize()
        return time.perf_counter() - start
    finally:
        if collecting:
            gc.enable()


def _synchronize() -> None:
    """GPU kernels run asynchronously: a timer must wait for them (a no-op on the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _place(contenders: list[Contender], settings: BenchSettings) -> None:
    dtype = getattr(torch, settings.dtype)
    for c in contenders:
        c.model.to(device=settings.device, dtype=dtype)
        if settings.attn_implementation:
            c.model.set_attn_implementation(settings.attn_implementation)


def _model_inputs(contender: Contender, question: str = QUESTION) -> dict:
    sample = one_image_sample(contender.processor, question)
    if contender.peer_of is not None:  # transformers' Llava takes no perceiver inputs
        sample = {k: sample[k] for k in ("input_ids", "attention_mask", "pixel_values")}
    return {k: v.to(contender.model.device) for k, v in sample.items()}


def _generate(model, inputs: dict, new_tokens: int):
    return model.generate(**inputs, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False)


def _train_batch(contender: Contender, size: int) -> dict:
    sample = _model_inputs(contender)
    batch = {k: v.repeat(size, *([1] * (v.ndim - 1))) for k, v in sample.items()}
    labels = batch["input_ids"].clone()
    labels[contender.model.model.image_span_mask(labels) | (batch["attention_mask"] == 0)] = -100
    return {**batch, "labels": labels}


def _train_step(model, batch: dict) -> None:
    model.train()
    with torch.enable_grad():
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    model.eval()


class _CallCounter:
    """Counts forward calls of named submodules (the vision tower, the perceiver) with hooks."""

    def __init__(self, model, paths: tuple[str, ...] = ("model.vision_tower", "model.perceiver")):
        self.calls = dict.fromkeys(paths, 0)
        self._handles = []
        for path in paths:
            try:
                module = model.get_submodule(path)
            except AttributeError:
                continue
            if module is not None:
                self._handles.append(module.register_forward_hook(self._hook(path)))

    def _hook(self, path: str):
        def count(*_):
            self.calls[path] += 1

        return count

    def total(self) -> int:
        return sum(self.calls.values())

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


@torch.no_grad()
def _second_turn(contender: Contender, cached: bool) -> tuple[float, int]:
    """Time to first token of a second question about the image of a first one, and how many
    vision-tower / perceiver calls it made; with or without the image feature cache."""
    model = contender.model
    if cached:
        model.enable_image_feature_cache()
    first, second = _model_inputs(contender), _model_inputs(contender, SECOND_QUESTION)
    try:
        _generate(model, first, 1)
        counter = _CallCounter(model)
        try:
            seconds = _timed(lambda: _generate(model, second, 1))
        finally:
            counter.remove()
        return seconds, counter.total()
    finally:
        model.disable_image_feature_cache()


@torch.no_grad()
def _chat_second_turn(contender: Contender, reuse: bool) -> tuple[float, int]:
    """Time to first token of a chat's second turn with the whole history re-sent (as chat
    clients do): read from scratch, or continuing the first turn's KV cache (`Conversations`);
    and how many prompt tokens came from the cache."""
    from PIL import Image

    image = Image.new("RGB", (448, 448))
    first = [
        {"role": "user", "content": [{"type": "image", "image": image}, {"type": "text", "text": QUESTION}]}
    ]
    chat = Conversations(contender.model, contender.processor, feature_cache_images=0)
    answer = chat.reply(first, max_new_tokens=8).text
    messages = [
        *first,
        {"role": "assistant", "content": answer},
        {"role": "user", "content": SECOND_QUESTION},
    ]
    if not reuse:
        chat.reset()
    start = time.perf_counter()
    reply = chat.reply(messages, max_new_tokens=1)
    return time.perf_counter() - start, reply.reused_tokens


def _uses_feature_cache(contender: Contender) -> bool:
    return contender.peer_of is None and not contender.model.config.early_fusion


def run_bench(
    contenders: list[Contender], settings: BenchSettings | None = None, progress=None
) -> BenchResult:
    """Time every contender; the first is the reference the ratios divide by."""
    settings = settings or BenchSettings()
    if not contenders:
        raise ValueError("nothing to bench: give at least one model")
    result = BenchResult(settings=settings.__dict__.copy())
    _place(contenders, settings)
    for c in contenders:
        c.model.eval()
    inputs = {c.name: _model_inputs(c) for c in contenders}
    batches = {c.name: _train_batch(c, settings.train_batch) for c in contenders if c.trains}
    _check_peers(contenders, inputs, result)
    tasks: dict[str, dict[str, Callable[[], float]]] = {}
    for c in contenders:
        model, x, n = c.model, inputs[c.name], settings.new_tokens
        tasks[c.name] = {
            "prefill_s": lambda m=model, x=x: _timed(lambda: _no_grad(m, x)),
            "first_token_s": lambda m=model, x=x: _timed(lambda: _generate_no_grad(m, x, 1)),
            f"generate_{n}_s": lambda m=model, x=x, n=n: _timed(lambda: _generate_no_grad(m, x, n)),
        }
        if c.trains:
            tasks[c.name]["train_step_s"] = lambda m=model, b=batches[c.name]: _timed(
                lambda: _train_step(m, b)
            )
        if _uses_feature_cache(c):
            tasks[c.name]["second_turn_first_token_s"] = lambda c=c: _second_turn(c, cached=False)[0]
            tasks[c.name]["second_turn_first_token_cached_s"] = lambda c=c: _second_turn(c, cached=True)[0]
        if c.peer_of is None:
            tasks[c.name]["chat_second_turn_s"] = lambda c=c: _chat_second_turn(c, reuse=False)[0]
            tasks[c.name]["chat_second_turn_reused_s"] = lambda c=c: _chat_second_turn(c, reuse=True)[0]
    samples: dict[str, dict[str, list[float]]] = {c.name: {k: [] for k in tasks[c.name]} for c in contenders}
    order = [c.name for c in contenders]
    rounds = range(settings.warmup + settings.repeats)
    for r in progress(rounds) if progress else rounds:
        for name in order[r % len(order) :] + order[: r % len(order)]:
            for metric, task in tasks[name].items():
                seconds = task()
                if r >= settings.warmup:
                    samples[name][metric].append(seconds)
    if settings.compile_decode:
        _time_compiled_decode(contenders, inputs, settings, samples)
    for c in contenders:
        medians = {metric: statistics.median(values) for metric, values in samples[c.name].items()}
        n = settings.new_tokens
        decode = medians[f"generate_{n}_s"] - medians["first_token_s"]
        medians["decode_tokens_per_s"] = (n - 1) / decode if decode > 0 else float("nan")
        if _uses_feature_cache(c):
            medians["second_turn_calls"] = _second_turn(c, cached=False)[1]
            medians["second_turn_calls_cached"] = _second_turn(c, cached=True)[1]
        if c.peer_of is None:
            medians["chat_second_turn_reused_tokens"] = _chat_second_turn(c, reuse=True)[1]
        medians["forward_gflops"] = forward_flops(c.model, inputs[c.name])["total"] / 1e9
        medians["parameters"] = sum(p.numel() for p in c.model.parameters())
        result.models[c.name] = medians
    _ratios(contenders, result, settings)
    return result


@torch.no_grad()
def _no_grad(model, inputs: dict):
    return model(**inputs, use_cache=True)


@torch.no_grad()
def _generate_no_grad(model, inputs: dict, new_tokens: int):
    return _generate(model, inputs, new_tokens)


def _time_compiled_decode(contenders, inputs: dict, settings: BenchSettings, samples: dict) -> None:
    """Generation with each model's forward under `torch.compile` (after the eager rounds, so the
    compiled forward times nothing else); the warm-up rounds absorb the compilation."""
    n = settings.new_tokens
    metric = f"generate_{n}_compiled_s"
    for c in contenders:
        c.model.forward = torch.compile(c.model.forward, dynamic=True)
        samples[c.name][metric] = []
    try:
        for r in range(settings.warmup + settings.repeats):
            for c in contenders:
                seconds = _timed(lambda m=c.model, x=inputs[c.name]: _generate_no_grad(m, x, n))
                if r >= settings.warmup:
                    samples[c.name][metric].append(seconds)
    finally:
        for c in contenders:
            del c.model.forward  # the instance attribute: the class's eager forward again


@torch.no_grad()
def _check_peers(contenders: list[Contender], inputs: dict, result: BenchResult) -> None:
    """A peer must compute what ours computes before its speed means anything."""
    by_name = {c.name: c for c in contenders}
    for c in contenders:
        if c.peer_of is None:
            continue
        ours = by_name[c.peer_of]
        x = inputs[c.name]
        theirs_logits = c.model(**x).logits.float()
        ours_logits = ours.model(**x).logits.float()
        diff = float((ours_logits - theirs_logits).abs().max())
        same_tokens = torch.equal(_generate(ours.model, x, 8), _generate(c.model, x, 8))
        result.peer[ours.name] = {
            "peer": c.name,
            "max_abs_logit_diff": diff,
            "same_greedy_tokens": same_tokens,
        }


def _ratios(contenders: list[Contender], result: BenchResult, settings: BenchSettings) -> None:
    """Each model against the reference (time ratios: theirs / reference), the peer against ours
    (speed ratios: peer time / our time, above 1 when ours is faster)."""
    reference = result.models[contenders[0].name]
    metrics = (
        "prefill_s",
        "first_token_s",
        "train_step_s",
        "decode_tokens_per_s",
        "forward_gflops",
        "parameters",
    )
    for c in contenders[1:]:
        if c.peer_of is not None:
            continue
        m = result.models[c.name]
        result.ratios[c.name] = {k: m[k] / reference[k] for k in metrics if k in m and k in reference}
    for c in contenders:
        m = result.models[c.name]
        if "second_turn_first_token_cached_s" in m:
            m["second_turn_speedup"] = m["second_turn_first_token_s"] / m["second_turn_first_token_cached_s"]
        if c.peer_of is not None:
            ours, n = result.models[c.peer_of], settings.new_tokens
            result.peer[c.peer_of].update(
                forward_speed_vs_peer=m["prefill_s"] / ours["prefill_s"],
                generate_speed_vs_peer=m[f"generate_{n}_s"] / ours[f"generate_{n}_s"],
            )


def format_bench(result: BenchResult) -> str:
    """The medians per model, the ratios to the reference, and ours against the peer."""
    n = result.settings["new_tokens"]
    columns = [
        ("prefill ms", "prefill_s", 1e3),
        ("1st token ms", "first_token_s", 1e3),
        ("decode tok/s", "decode_tokens_per_s", 1),
        ("train step ms", "train_step_s", 1e3),
        ("2nd turn ms", "second_turn_first_token_s", 1e3),
        ("cached ms", "second_turn_first_token_cached_s", 1e3),
        ("chat turn 2 ms", "chat_second_turn_s", 1e3),
        ("KV reused ms", "chat_second_turn_reused_s", 1e3),
        ("GFLOPs", "forward_gflops", 1),
        ("params M", "parameters", 1e-6),
    ]
    if result.settings.get("compile_decode"):
        columns.insert(3, ("compiled gen ms", f"generate_{n}_compiled_s", 1e3))
    width = max(len(name) for name in result.models) + 2
    lines = [f"{'model':<{width}}" + "".join(f"{title:>16}" for title, _, _ in columns)]
    for name, m in result.models.items():
        cells = [f"{m[key] * scale:>16.2f}" if key in m else f"{'-':>16}" for _, key, scale in columns]
        lines.append(f"{name:<{width}}" + "".join(cells))
    reference = next(iter(result.models))
    for name, r in result.ratios.items():
        lines.append(
            f"\n{name} / {reference}: parameters {r['parameters']:.2f}x, "
            f"forward FLOPs {r['forward_gflops']:.2f}x, prefill {r['prefill_s']:.2f}x, "
            f"first token {r['first_token_s']:.2f}x, train step {r.get('train_step_s', float('nan')):.2f}x, "
            f"decode throughput {r['decode_tokens_per_s']:.1%}"
        )
    for name, m in result.models.items():
        if "second_turn_calls_cached" in m:
            lines.append(
                f"{name}: second question on the same image - vision/perceiver calls "
                f"{m['second_turn_calls']} -> {m['second_turn_calls_cached']} with the feature cache, "
                f"first token {m['second_turn_speedup']:.2f}x faster"
            )
        if "chat_second_turn_reused_s" in m:
            lines.append(
                f"{name}: a chat's second turn (history re-sent) continuing the first turn's KV cache "
                f"({m['chat_second_turn_reused_tokens']} prompt tokens reused): first token "
                f"{m['chat_second_turn_s'] / m['chat_second_turn_reused_s']:.2f}x faster"
            )
    for name, p in result.peer.items():
        lines.append(
            f"{name} vs {p['peer']}: max |logit diff| {p['max_abs_logit_diff']:.2e}, same greedy tokens: "
            f"{p['same_greedy_tokens']}; speed ours/theirs: forward {p['forward_speed_vs_peer']:.2f}x, "
            f"generate {n} tokens {p['generate_speed_vs_peer']:.2f}x"
        )
    return "\n".join(lines)
