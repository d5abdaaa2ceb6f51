"""The authors' released checkpoints as prealign folders (`prealign convert official`).

THUMAI-Lab/Deep-Pre-Alignment trains and releases DPA (`team6013/DPA-4B`, `-init`) as ms-swift's
`ForwardVisualTokensArchForCausalLM`: a Qwen2.5-VL ViT whose merger feeds Qwen3 blocks with M-RoPE
(the perceiver), an aligner `linear_align_dim`, and a Qwen3 target (the "thinker"). Its
`config.json` names the sub-models by hub id or path instead of storing them. The conversion maps
every tensor to prealign's layout (tied copies checked equal, anything missing or left over an
error naming it), builds the `PrealignConfig` from the named sub-configs, and a processor that
prompts as the authors' evaluation does (their VLMEvalKit model, default settings).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict
from safetensors.torch import load_file
from transformers import AutoConfig, AutoImageProcessor, AutoTokenizer, GenerationConfig, PreTrainedConfig

from .config import PrealignConfig
from .modeling import PrealignForConditionalGeneration
from .processing import PrealignProcessor

AUTHORS_MODEL_TYPE = "forward_visual_tokens_llava_arch"
# Their evaluation's prompt convention: this system prompt in the perceiver's and the target's
# chat, the target's reply opened by an empty reasoning block (Qwen3's non-thinking format), and
# the perceiver reading the image inside the Qwen2.5-VL chat template.
AUTHORS_PROMPT = {
    "system_prompt": "You are a helpful assistant.",
    "thinking": False,
    "perceiver_prompt": "chat",
}
QWEN_IMAGE_TOKENS = {
    "image_token": "<|image_pad|>",
    "image_start_token": "<|vision_start|>",
    "image_end_token": "<|vision_end|>",
}
# Their tensor names -> prealign's, by prefix.
KEY_PREFIXES = {
    "model.perceiver.model.vlm.visual.": "model.vision_tower.",
    "model.perceiver.model.vlm.language_model.": "model.perceiver.language_model.",
    "model.thinker.model.": "model.language_model.",
    "model.linear_align_dim.": "model.aligner.",
    "model.thinker.lm_head.": "lm_head.",
}
TARGET_HEAD_COPY = "lm_head.weight"  # their top-level head is the thinker's head
PERCEIVER_HEAD = "model.perceiver.lm_head.weight"  # DPA reads the perceiver's states, not its logits
# Their config.json's names of the sub-models, and where each sits in it.
PART_FIELDS = {
    "vit": ("perceiver_config", "vit_path"),
    "llm": ("perceiver_config", "llm_path"),
    "thinker": (None, "thinker_name_or_path"),
    "thinker_tokenizer": (None, "t_tokenizer_name_or_path"),
    "perceiver_processor": (None, "p_processor_name_or_path"),
}


@dataclass(frozen=True)
class OfficialParts:
    """Where each sub-model of an authors' checkpoint is read from (a folder or a hub id)."""

    vit: str
    llm: str
    thinker: str
    thinker_tokenizer: str
    perceiver_processor: str


def resolve_parts(source: Path, authors_config: dict, overrides: dict[str, str | None]) -> OfficialParts:
    """Each part from `overrides` (the command line), else as the config names it: a path relative
    to `source` when that exists there, else an absolute path or a hub id."""
    found = {}
    for part, (section, field) in PART_FIELDS.items():
        if overrides.get(part):
            found[part] = str(overrides[part])
            continue
        holder = authors_config.get(section, {}) if section else authors_config
        name = holder.get(field)
        if not name:
            where = ".".join(filter(None, (section, field)))
            raise ValueError(f"{source / 'config.json'}: no {where}; pass --{part.replace('_', '-')}.")
        local = source / name
        found[part] = str(local) if local.exists() else name
    return OfficialParts(**found)


def read_authors_weights(source: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder's weight files (`.bin` shards, as they release, or safetensors)."""
    files = sorted(source.glob("*.safetensors")) or sorted(source.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{source}: no weights (pytorch_model*.bin or *.safetensors).")
    state = {}
    for file in files:
        if file.suffix == ".safetensors":
            state.update(load_file(file))
        else:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    return state


def _read_part(part: str, name: str, reader):
    """A sub-model's config or tokenizer, or an error saying which flag gives it a local folder."""
    try:
        return reader(name)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"cannot read the {part} part from {name!r} ({error}); pass --{part.replace('_', '-')} FOLDER "
            "with a local copy of it."
        ) from error


def prealign_config(
    parts: OfficialParts, authors_config: dict, processor: PrealignProcessor
) -> PrealignConfig:
    """The `PrealignConfig` of their architecture, from the sub-configs their config names."""
    vit = _read_part("vit", parts.vit, AutoConfig.from_pretrained)
    perceiver_lm = _read_part("llm", parts.llm, AutoConfig.from_pretrained)
    target = _read_part("thinker", parts.thinker, AutoConfig.from_pretrained)
    perceiver_settings = authors_config["perceiver_config"]
    # Their perceiver's rotary is built from its own config (a Qwen2 config): its base, its head size.
    head_dim = perceiver_settings["hidden_size"] // perceiver_settings["num_attention_heads"]
    if head_dim != perceiver_lm.head_dim:
        raise ValueError(
            f"perceiver_config gives a rotary head size of {head_dim}, but {parts.llm} has head_dim "
            f"{perceiver_lm.head_dim}: not a checkpoint this conversion knows."
        )
    perceiver_lm.rope_parameters = {
        **perceiver_lm.rope_parameters,
        "rope_theta": perceiver_settings["rope_theta"],
    }
    vision = vit.vision_config
    vision.out_hidden_size = perceiver_lm.hidden_size  # their merger, re-made at the perceiver's width
    return PrealignConfig(
        vision_config=vision,
        text_config=target,
        perceiver_text_config=perceiver_lm,
        projector_type="merger",
        aligner_type="linear_relu_linear",
        include_image_markers=True,
        perceiver_mrope_section=list(_mrope_section(vit)),
        **processor.token_ids(),
    )


def _mrope_section(vit: PreTrainedConfig) -> list[int]:
    for holder in (vit.get_text_config(), vit):
        for field in ("rope_parameters", "rope_scaling"):
            section = (getattr(holder, field, None) or {}).get("mrope_section")
            if section:
                return section
    raise ValueError(f"{vit.name_or_path}: no mrope_section in its rope settings.")


def authors_processor(parts: OfficialParts) -> PrealignProcessor:
    """Their evaluation's inputs: Qwen2.5-VL's image processing and chat for the perceiver, the
    target's tokenizer and chat, Qwen's own vision tokens (`AUTHORS_PROMPT`)."""
    return PrealignProcessor(
        _read_part("perceiver_processor", parts.perceiver_processor, AutoImageProcessor.from_pretrained),
        _read_part("thinker_tokenizer", parts.thinker_tokenizer, AutoTokenizer.from_pretrained),
        _read_part("perceiver_processor", parts.perceiver_processor, AutoTokenizer.from_pretrained),
        uses_perceiver=True,
        **QWEN_IMAGE_TOKENS,
        **AUTHORS_PROMPT,
    )


def convert_state(
    state: dict[str, torch.Tensor], config: PrealignConfig, source: Path
) -> dict[str, torch.Tensor]:
    """Their tensors under prealign's names; every tensor accounted for, or an error naming it."""
    state = dict(state)
    _check_copy(state, TARGET_HEAD_COPY, "model.thinker.lm_head.weight", source)
    state.pop(TARGET_HEAD_COPY)
    if config.perceiver_text_config.tie_word_embeddings:
        _check_copy(
            state, PERCEIVER_HEAD, "model.perceiver.model.vlm.language_model.embed_tokens.weight", source
        )
    state.pop(PERCEIVER_HEAD, None)
    if config.text_config.tie_word_embeddings:
        _check_copy(state, "model.thinker.lm_head.weight", "model.thinker.model.embed_tokens.weight", source)
        state.pop("model.thinker.lm_head.weight")
    converted, unknown = {}, []
    for key, tensor in state.items():
        prefix = next((p for p in KEY_PREFIXES if key.startswith(p)), None)
        if prefix is None:
            unknown.append(key)
        else:
            converted[KEY_PREFIXES[prefix] + key[len(prefix) :]] = tensor
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(converted))
    extra = sorted(unknown + [key for key in converted if key not in expected])
    wrong = sorted(
        f"{key} {tuple(converted[key].shape)} (expected {expected[key]})"
        for key in set(expected) & set(converted)
        if tuple(converted[key].shape) != expected[key]
    )
    if missing or extra or wrong:
        problems = [
            f"{what} ({len(keys)}): {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
            for what, keys in (
                ("missing", missing),
                ("not in the architecture", extra),
                ("wrong shape", wrong),
            )
            if keys
        ]
        raise ValueError(
            f"{source}: the weights do not match the authors' architecture - " + "; ".join(problems)
        )
    return converted


def _check_copy(state: dict, copy: str, original: str, source: Path) -> None:
    for key in (copy, original):
        if key not in state:
            raise ValueError(f"{source}: missing {key}.")
    if not torch.equal(state[copy], state[original]):
        raise ValueError(f"{source}: {copy} should be a tied copy of {original}, but they differ.")


def _expected_shapes(config: PrealignConfig) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = PrealignForConditionalGeneration(config)
    shapes = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    if config.tie_word_embeddings:
        shapes.pop("lm_head.weight")
    return shapes


def convert_official(source: str | Path, out: str | Path, **overrides: str | None) -> Path:
    """Write the authors' checkpoint in `source` as a prealign folder `out`; returns `out`.

    `overrides` (vit, llm, thinker, thinker_tokenizer, perceiver_processor) say where a part their
    config names is on this machine."""
    source, out = Path(source), Path(out)
    authors_config = json.loads((source / "config.json").read_text())
    if authors_config.get("model_type") != AUTHORS_MODEL_TYPE:
        raise ValueError(
            f"{source / 'config.json'} has model_type {authors_config.get('model_type')!r}, not the authors' "
            f"{AUTHORS_MODEL_TYPE!r}."
        )
    parts = resolve_parts(source, authors_config, overrides)
    processor = authors_processor(parts)
    config = prealign_config(parts, authors_config, processor)
    processor.configure_for(config)
    state = convert_state(read_authors_weights(source), config, source)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    save_torch_state_dict(state, out)
    model = PrealignForConditionalGeneration.from_pretrained(out)  # loads, or says what is wrong
    model.resize_to_processor(processor)
    model.generation_config = _generation_config(parts, model.generation_config)
    model.generation_config.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _generation_config(parts: OfficialParts, ours: GenerationConfig) -> GenerationConfig:
    """The target's own end-of-turn and padding ids (Qwen3 ends a reply at <|im_end|>)."""
    try:
        theirs = GenerationConfig.from_pretrained(parts.thinker)
    except OSError:
        return ours
    ours.eos_token_id, ours.pad_token_id = theirs.eos_token_id, theirs.pad_token_id
    return ours
