"""Tiny random-init parts (real HF architectures) for tests, smoke runs and examples, no downloads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoModel,
    AutoModelForCausalLM,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2_5_VLVisionConfig,
    Qwen2VLImageProcessorPil,
    Qwen2VLVisionConfig,
    Qwen3Config,
    SiglipImageProcessorPil,
    SiglipVisionConfig,
    SiglipVisionModel,
)
from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VisionTransformerPretrainedModel

from .chat_template import CHATML_TEMPLATE
from .modeling import PrealignForConditionalGeneration
from .processing import PrealignProcessor

VisionKind = Literal["siglip", "clip", "qwen2_5_vl", "qwen2_vl"]
# A native-resolution processor's pixel budget for tiny towers: images become 2-16 merged tokens.
TINY_MIN_PIXELS, TINY_MAX_PIXELS = 2 * 28 * 28, 16 * 28 * 28
LMKind = Literal["qwen3", "llama"]

_CORPUS = [
    "A red circle is left of a blue square. How many shapes are there? There are two shapes.",
    "Describe the image. The picture shows a small green triangle above a large yellow circle.",
    "What colour is the square? The square is blue. Is there a triangle? Yes. Is there a star? No.",
    "Answer with the letter of the correct option. A. red B. green C. blue D. yellow",
    "one two three four five six seven eight nine ten 0 1 2 3 4 5 6 7 8 9 + - = ?",
]


def tiny_tokenizer(
    vocab_size: int = 384,
    special_tokens: Sequence[str] = ("<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"),
    eos_token: str = "<|im_end|>",
    pad_token: str = "<|pad|>",
    bos_token: str | None = None,
    chat_template: str = CHATML_TEMPLATE,
    added_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (encodes any text), by default with a ChatML chat template. The
    other arguments give it a published model's special tokens and template, for tests of real
    chat formats (`added_tokens`: tokens that are not special, as Qwen3's `<think>`)."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad_token,
        eos_token=eos_token,
        bos_token=bos_token,
        unk_token=None,
        chat_template=chat_template,
    )
    tokenizer.add_tokens(list(added_tokens))
    return tokenizer


def tiny_vision_tower(
    kind: VisionKind = "siglip", image_size: int = 32, patch_size: int = 8, out_hidden_size: int = 32
) -> PreTrainedModel:
    """A tiny tower of a real architecture. Qwen2.5-VL's and Qwen2-VL's are native-resolution
    (patch 14, 2x2 merge; Qwen2.5-VL's with window attention in block 0 and full attention in
    block 1, as the real one alternates); their mergers output `out_hidden_size`; `image_size` and
    `patch_size` are for fixed-size towers."""
    if kind == "qwen2_5_vl":
        config = Qwen2_5_VLVisionConfig(
            depth=2,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=out_hidden_size,
            window_size=56,
            fullatt_block_indexes=[1],
        )
        return AutoModel.from_config(config)
    if kind == "qwen2_vl":
        config = Qwen2VLVisionConfig(
            depth=2, embed_dim=32, hidden_size=out_hidden_size, num_heads=2, mlp_ratio=2
        )
        return Qwen2VisionTransformerPretrainedModel(config)
    common = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=image_size,
        patch_size=patch_size,
    )
    if kind == "siglip":
        # The pooling head is unused by a VLM; without it every tower parameter gets gradients.
        return SiglipVisionModel(SiglipVisionConfig(**common, vision_use_head=False))
    if kind == "clip":
        return CLIPVisionModel(CLIPVisionConfig(**common))
    raise ValueError(f"Unknown tiny vision tower {kind!r}.")


def tiny_image_processor(kind: VisionKind = "siglip", image_size: int = 32):
    if kind in ("qwen2_5_vl", "qwen2_vl"):
        return Qwen2VLImageProcessorPil(
            size={"shortest_edge": TINY_MIN_PIXELS, "longest_edge": TINY_MAX_PIXELS}
        )
    if kind == "siglip":
        return SiglipImageProcessorPil(size={"height": image_size, "width": image_size})
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size}, crop_size={"height": image_size, "width": image_size}
    )


def tiny_causal_lm(
    kind: LMKind = "qwen3",
    vocab_size: int = 384,
    hidden_size: int = 32,
    num_layers: int = 2,
    tie_word_embeddings: bool = False,
    head_dim: int | None = None,
) -> PreTrainedModel:
    """A tiny causal LM; `head_dim` (default hidden_size / 4) may be a real model's (Qwen3's 128),
    so that settings written for it - M-RoPE sections - apply as they are."""
    # A wide init (0.02 is the usual) so that attention really mixes positions: with tiny weights
    # the residual stream dominates and a bug such as a padding leak moves outputs by only ~1e-6.
    common = dict(
        initializer_range=0.3,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim or hidden_size // 4,
        max_position_embeddings=512,
        tie_word_embeddings=tie_word_embeddings,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    config = Qwen3Config(**common) if kind == "qwen3" else LlamaConfig(**common)
    return AutoModelForCausalLM.from_config(config)


def tiny_model(
    variant: Literal["baseline", "dpa"] = "dpa",
    vision: VisionKind = "siglip",
    target: LMKind = "qwen3",
    perceiver: LMKind = "qwen3",
    **config_kwargs,
):
    """A tiny random-init (model, processor) pair assembled through `from_parts`, as users do."""
    processor = PrealignProcessor(tiny_image_processor(vision), tiny_tokenizer())
    vocab = len(processor.tokenizer)
    model = PrealignForConditionalGeneration.from_parts(
        vision_model=tiny_vision_tower(vision),
        text_model=tiny_causal_lm(target, vocab_size=vocab, hidden_size=48, num_layers=3),
        perceiver_text_model=tiny_causal_lm(perceiver, vocab_size=vocab) if variant == "dpa" else None,
        processor=processor,
        **config_kwargs,
    )
    return model, processor
