"""The authors' DPA in miniature: Qwen's real tokenizer, tiny Qwen2.5-VL tower and Qwen3 LMs.

The tokenizer is Qwen's own (tests/fixtures/qwen_tokenizer), so the image span uses Qwen's vision
tokens at their real ids and the LMs keep Qwen's 151,936-row embedding tables; the weights are tiny
and random.
"""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from prealign import PrealignForConditionalGeneration, PrealignProcessor
from prealign.tiny import tiny_causal_lm, tiny_image_processor, tiny_vision_tower

FIXTURES = Path(__file__).parent / "fixtures"
QWEN_VOCAB_ROWS = 151_936  # Qwen2.5 / Qwen3 checkpoints' embedding rows (the tokenizer has 151,669 tokens)
QWEN_VISION_TOKENS = {
    "image_token": "<|image_pad|>",
    "image_start_token": "<|vision_start|>",
    "image_end_token": "<|vision_end|>",
}
QWEN_VISION_IDS = {"<|vision_start|>": 151652, "<|vision_end|>": 151653, "<|image_pad|>": 151655}
PERCEIVER_MROPE_SECTION = [2, 3, 3]  # the authors' [16, 24, 24] scaled to a head dimension of 16
TARGET_MROPE_SECTION = [2, 2, 2]  # the baseline's target (head dimension 12)


def qwen_tokenizer(folder: Path, template: str = "qwen3"):
    """Qwen's tokenizer with a published chat template ("qwen3" or "qwen2_5_vl")."""
    folder.mkdir(parents=True, exist_ok=True)
    source = FIXTURES / "qwen_tokenizer"
    for name in ("vocab.json", "merges.txt"):
        with gzip.open(source / f"{name}.gz", "rb") as packed, open(folder / name, "wb") as out:
            shutil.copyfileobj(packed, out)
    shutil.copy(source / "tokenizer_config.json", folder / "tokenizer_config.json")
    shutil.copy(FIXTURES / "chat_templates" / f"{template}.jinja", folder / "chat_template.jinja")
    return AutoTokenizer.from_pretrained(folder)


def qwen_dpa(folder: Path, variant: str = "dpa", tower: str = "qwen2_5_vl", **config_kwargs):
    """(model, processor): a tiny DPA of the authors' layout - Qwen2.5-VL tower with its merger as
    phi_p, Qwen3 perceiver with M-RoPE reading Qwen2.5-VL's template, Qwen3 target - or the
    baseline (`variant="baseline"`: the tower's merger straight into a Qwen3 target with M-RoPE).
    `tower="qwen2_vl"` takes Qwen2-VL's tower instead."""
    processor = PrealignProcessor(
        tiny_image_processor(tower),
        qwen_tokenizer(folder / "target", "qwen3"),
        perceiver_tokenizer=qwen_tokenizer(folder / "perceiver", "qwen2_5_vl") if variant == "dpa" else None,
        **QWEN_VISION_TOKENS,
    )
    lm = dict(vocab_size=QWEN_VOCAB_ROWS, tie_word_embeddings=True)
    dpa = variant == "dpa"
    if dpa:
        config_kwargs.setdefault("perceiver_mrope_section", PERCEIVER_MROPE_SECTION)
    else:
        config_kwargs.setdefault("text_mrope_section", TARGET_MROPE_SECTION)
    model = PrealignForConditionalGeneration.from_parts(
        vision_model=tiny_vision_tower(tower, out_hidden_size=48),
        text_model=tiny_causal_lm("qwen3", hidden_size=48, num_layers=2, **lm),
        perceiver_text_model=tiny_causal_lm("qwen3", hidden_size=64, num_layers=2, **lm) if dpa else None,
        processor=processor,
        projector_type="merger",
        **config_kwargs,
    )
    return model, processor


def tiny_qwen2_5_vl_config(**overrides) -> Qwen2_5_VLConfig:
    """A whole Qwen2.5-VL (tiny tower, 1-layer text model with Qwen's vocabulary), as on the hub."""
    return Qwen2_5_VLConfig(
        vision_config=tiny_vision_tower("qwen2_5_vl", out_hidden_size=40).config.to_dict(),
        text_config=dict(
            hidden_size=40,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            vocab_size=QWEN_VOCAB_ROWS,
        ),
        **overrides,
    )


def save_qwen_parts(folder: Path, head_dim: int | None = None):
    """A tiny Qwen2.5-VL checkpoint (its tower is `visual`, its image processor beside it) and
    Qwen3 LM folders (`qwen3_4b`, 48 wide; `qwen3_0_6b`, 64 wide) with Qwen's tokenizer, laid out as
    the hub's are. `head_dim=128` (Qwen3's) lets settings written for the real models apply as
    they are. Returns the Qwen2.5-VL model."""
    vlm = Qwen2_5_VLForConditionalGeneration(tiny_qwen2_5_vl_config())
    vlm.save_pretrained(folder / "qwen2_5_vl")
    tiny_image_processor("qwen2_5_vl").save_pretrained(folder / "qwen2_5_vl")
    for name, width, template in (("qwen3_4b", 48, "qwen3"), ("qwen3_0_6b", 64, "qwen2_5_vl")):
        lm = tiny_causal_lm(
            "qwen3",
            vocab_size=QWEN_VOCAB_ROWS,
            hidden_size=width,
            tie_word_embeddings=True,
            head_dim=head_dim,
        )
        lm.save_pretrained(folder / name)
        qwen_tokenizer(folder / name, template).save_pretrained(folder / name)
    return vlm
