"""`PrealignForConditionalGeneration`: the LLaVA baseline and Deep Pre-Alignment in one HF model.

Baseline: image -> vision tower -> projector -> the target LM's `<image>` positions.
DPA:      image -> vision tower -> projector (phi_p) -> perceiver LM over the image span
          -> aligner (phi) -> the target LM's image-span positions (markers included by default).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from os import PathLike

import torch
from torch import nn
from transformers import AutoModel, AutoModelForCausalLM, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast

from ..config import PrealignConfig
from ..image_span import PER_IMAGE_INPUTS, grid_token_counts, per_image_pixels, select_images, split_per_image
from .cache_naming import CACHE_NAME, cache_of, resolve_cache
from .checks import check_context, eager_checks
from .feature_cache import ImageFeatureCache
from .parts import load_causal_lm, load_vision_tower, with_merger_width
from .perceiver import PerceiverBlocks
from .projectors import build_projector
from .rotary import multimodal_positions, use_multimodal_rotary

PartSpec = str | PathLike | PreTrainedModel
# Inputs only prefill reads (decode steps see the KV cache); transformers drops pixel_values itself.
PREFILL_ONLY_INPUTS = ("perceiver_input_ids", "perceiver_attention_mask", "image_grid_thw")


@dataclass
class PrealignOutput(CausalLMOutputWithPast):
    """transformers' causal-LM output plus the visual features written into the target sequence."""

    image_hidden_states: torch.FloatTensor | None = None


class PrealignPreTrainedModel(PreTrainedModel):
    config: PrealignConfig
    config_class = PrealignConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _skip_keys_device_placement = [CACHE_NAME]
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_flex_attn = True
    _supports_attention_backend = True


class PrealignModel(PrealignPreTrainedModel):
    """The body: vision tower, projector, optional perceiver + aligner, target LM (no head)."""

    def __init__(self, config: PrealignConfig):
        super().__init__(config)
        self.vision_tower = AutoModel.from_config(config.vision_config)
        self.projector = build_projector(
            config.projector_type, config.vision_feature_size, config.first_lm_config.hidden_size
        )
        if config.uses_perceiver:
            self.perceiver = PerceiverBlocks(config)
            self.aligner = build_projector(
                config.aligner_type, config.perceiver_text_config.hidden_size, config.text_config.hidden_size
            )
        else:
            self.perceiver = None
            self.aligner = None
        self.set_language_model(AutoModel.from_config(config.text_config))
        self.image_feature_cache: ImageFeatureCache | None = None
        # M-RoPE positions continue past an image's grid, not its token count: what decode steps
        # add to their 1-D positions, set at each prefill (as Qwen2.5-VL keeps its rope_deltas).
        self.rope_deltas: torch.Tensor | None = None
        self.post_init()

    def set_language_model(self, language_model: nn.Module) -> None:
        """The target LM's body, given M-RoPE when the config asks for it."""
        if self.config.text_mrope_section is not None:
            use_multimodal_rotary(language_model, self.config.text_mrope_section)
        self.language_model = language_model

    def train(self, mode: bool = True):
        # Features cached before training describe the old weights.
        if mode and self.image_feature_cache is not None:
            self.image_feature_cache.clear()
        return super().train(mode)

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def image_token_counts(
        self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None
    ) -> list[int]:
        """N of each image: the tower's fixed count, or a native-resolution tower's per-image grid."""
        if self.config.native_resolution:
            if image_grid_thw is None:
                raise ValueError(
                    "A native-resolution vision tower needs image_grid_thw (each image's patch grid) with "
                    "its pixel_values; the PrealignProcessor gives both."
                )
            return grid_token_counts(image_grid_thw, self.config.vision_config.spatial_merge_size)
        return [self.config.image_seq_length] * pixel_values.shape[0]

    def get_vision_features(
        self, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Projected vision-tower features of every image, flattened in image order: (sum of N, d)
        with d the first LM's width."""
        dtype = next(self.vision_tower.parameters()).dtype
        if self.config.native_resolution:
            self.image_token_counts(pixel_values, image_grid_thw)  # says what is missing
            # The tower's pooled output is its merger's: merged patches in the images' own order.
            features = self.vision_tower(pixel_values.to(dtype), grid_thw=image_grid_thw).pooler_output
            return self.projector(features)
        self._check_pixel_size(pixel_values)
        out = self.vision_tower(pixel_values=pixel_values.to(dtype), output_hidden_states=True)
        features = out.hidden_states[self.config.vision_feature_layer]
        if self.config.vision_feature_select_strategy == "drop_cls":
            features = features[:, 1:]
        return self.projector(features).flatten(0, 1)

    def _check_pixel_size(self, pixel_values: torch.Tensor) -> None:
        """Fixed-size towers (SigLIP, CLIP) fail deep inside on other sizes: say what they expect."""
        size = getattr(self.config.vision_config, "image_size", None)
        channels = getattr(self.config.vision_config, "num_channels", 3)
        expected = (channels, size, size) if isinstance(size, int) else None
        if pixel_values.ndim != 4 or (expected and tuple(pixel_values.shape[1:]) != expected):
            raise ValueError(
                f"pixel_values have shape {tuple(pixel_values.shape)}; the vision tower takes "
                f"(images, {', '.join(map(str, expected)) if expected else 'channels, height, width'}). "
                "Prepare images with the model's processor (PrealignProcessor), which resizes them."
            )

    def get_image_features(
        self,
        pixel_values: torch.Tensor,
        perceiver_input_ids: torch.LongTensor | None = None,
        perceiver_attention_mask: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Features for the target's image spans, flattened in sample -> image -> position order.

        With an image feature cache (inference only, not under early fusion) images seen before are
        looked up by content and only the others go through the vision tower and the perceiver.
        """
        cache = self.image_feature_cache
        if cache is None or self.config.early_fusion or self.training or torch.is_grad_enabled():
            return self._compute_image_features(
                pixel_values, image_grid_thw, perceiver_input_ids, perceiver_attention_mask
            )
        pixels = per_image_pixels(pixel_values, image_grid_thw)
        grids = [None] * len(pixels) if image_grid_thw is None else list(image_grid_thw)
        keys = [cache.key(image, grid) for image, grid in zip(pixels, grids, strict=True)]
        found = [cache.get(key) for key in keys]
        missing = [i for i, features in enumerate(found) if features is None]
        if missing:
            inputs = {
                "pixel_values": pixel_values,
                "image_grid_thw": image_grid_thw,
                "perceiver_input_ids": perceiver_input_ids,
                "perceiver_attention_mask": perceiver_attention_mask,
            }
            picked = select_images(inputs, missing)
            computed = self._compute_image_features(
                picked["pixel_values"],
                picked.get("image_grid_thw"),
                picked.get("perceiver_input_ids"),
                picked.get("perceiver_attention_mask"),
            )
            counts = self.image_token_counts(picked["pixel_values"], picked.get("image_grid_thw"))
            per_image = split_per_image(computed, [self.config.features_per_image(n) for n in counts])
            for i, features in zip(missing, per_image, strict=True):
                cache.put(keys[i], features)
                found[i] = features
        return torch.cat(found)

    def _compute_image_features(
        self,
        pixel_values: torch.Tensor,
        image_grid_thw: torch.Tensor | None,
        perceiver_input_ids: torch.LongTensor | None,
        perceiver_attention_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        features = self.get_vision_features(pixel_values, image_grid_thw)
        if not self.config.uses_perceiver:
            return features
        if perceiver_input_ids is None:
            raise ValueError(
                "A DPA model needs `perceiver_input_ids` (one perceiver sequence per image) along with "
                "`pixel_values`; the PrealignProcessor builds them."
            )
        n_images = len(self.image_token_counts(pixel_values, image_grid_thw))
        if perceiver_input_ids.shape[0] != n_images:
            raise ValueError(
                f"Got {n_images} images but {perceiver_input_ids.shape[0]} perceiver sequences; "
                "the perceiver's batch is the images, one sequence each."
            )
        if perceiver_attention_mask is None:
            perceiver_attention_mask = torch.ones_like(perceiver_input_ids)
        span_states = self.perceiver(perceiver_input_ids, perceiver_attention_mask, features, image_grid_thw)
        return self.aligner(span_states)

    def image_span_mask(self, input_ids: torch.LongTensor) -> torch.Tensor:
        """Target positions that receive visual features."""
        ids = [self.config.image_token_id]
        if self.config.uses_perceiver and self.config.include_image_markers:
            ids += [self.config.image_start_token_id, self.config.image_end_token_id]
        if None in ids:
            raise ValueError(
                "The target's image token ids are not set in the config (image_token_id, "
                "image_start_token_id, image_end_token_id); build the model with "
                "`from_parts(..., processor=...)`."
            )
        return torch.isin(input_ids, torch.tensor(ids, device=input_ids.device))

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        perceiver_input_ids: torch.LongTensor | None = None,
        perceiver_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        past_key_values: Cache | None = None,
        image_grid_thw: torch.Tensor | None = None,
        **kwargs,
    ):
        cache = resolve_cache(cache, past_key_values)
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids or inputs_embeds.")
        image_features = None
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            prefill = cache is None or cache.get_seq_length() == 0
            if pixel_values is not None:
                image_features = self.get_image_features(
                    pixel_values, perceiver_input_ids, perceiver_attention_mask, image_grid_thw
                )
                inputs_embeds = self._write_image_features(input_ids, inputs_embeds, image_features)
            elif (
                prefill
                and eager_checks()
                and self.config.image_token_id is not None
                and (n_placeholders := int((input_ids == self.config.image_token_id).sum()))
            ):
                raise ValueError(
                    f"input_ids hold {n_placeholders} image placeholder tokens but no pixel_values were "
                    "given."
                )
        elif pixel_values is not None:
            raise ValueError("pixel_values need input_ids to locate the image positions, not inputs_embeds.")
        if self.config.text_mrope_section is not None:
            position_ids = self.target_positions(
                input_ids, attention_mask, position_ids, image_grid_thw, cache
            )
        outputs = self.language_model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=use_cache,
            **{CACHE_NAME: cache},
            **kwargs,
        )
        outputs["image_hidden_states"] = image_features
        return outputs

    def target_positions(
        self,
        input_ids: torch.LongTensor | None,
        attention_mask: torch.Tensor | None,
        position_ids: torch.LongTensor | None,
        image_grid_thw: torch.Tensor | None,
        cache: Cache | None,
    ) -> torch.LongTensor | None:
        """The target's M-RoPE positions: 3-D ones computed at prefill (image tokens on their
        grid), then decode steps' 1-D positions shifted by how far the prompt's images moved them."""
        if position_ids is not None and position_ids.ndim == 3:
            return position_ids
        if cache is None or cache.get_seq_length() == 0:
            if input_ids is None:
                return position_ids
            mask = attention_mask if attention_mask is not None else torch.ones_like(input_ids)
            grid = image_grid_thw if image_grid_thw is not None else input_ids.new_zeros(0, 3)
            merge_size = self.config.vision_config.spatial_merge_size
            positions = multimodal_positions(input_ids, mask, self.config.image_token_id, grid, merge_size)
            self.rope_deltas = positions.amax(dim=(0, 2)) + 1 - mask.sum(-1)
            return positions
        if self.rope_deltas is None or position_ids is None:
            raise ValueError(
                "A target with M-RoPE decodes from position_ids and the prompt's rope deltas: run the "
                "prompt through the model first (generate() does), and pass position_ids."
            )
        return (position_ids + self.rope_deltas.to(position_ids.device)[:, None]).expand(3, -1, -1)

    def _write_image_features(self, input_ids, inputs_embeds, image_features) -> torch.Tensor:
        span_mask = self.image_span_mask(input_ids)
        n_features = image_features.shape[0]
        if eager_checks() and (n_positions := int(span_mask.sum())) != n_features:
            raise ValueError(
                f"Image positions and image features do not match: input_ids hold {n_positions} image-span "
                f"positions but the model computed {n_features} features for the images given. Expand each "
                "image placeholder with the PrealignProcessor."
            )
        return inputs_embeds.masked_scatter(span_mask.unsqueeze(-1), image_features.to(inputs_embeds.dtype))


class PrealignForConditionalGeneration(PrealignPreTrainedModel, GenerationMixin):
    """Body + the target LM's head; generation runs the vision path only at prefill."""

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}

    def __init__(self, config: PrealignConfig):
        super().__init__(config)
        self.model = PrealignModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    def get_image_features(
        self, pixel_values, perceiver_input_ids=None, perceiver_attention_mask=None, image_grid_thw=None
    ):
        return self.model.get_image_features(
            pixel_values, perceiver_input_ids, perceiver_attention_mask, image_grid_thw
        )

    def enable_image_feature_cache(self, max_images: int = 64) -> ImageFeatureCache:
        """Reuse each image's features across calls (a chat's later turns, several questions about
        one image): inference only; early fusion, whose features depend on the instruction, never
        uses it. Returns the cache (its `hits` and `misses` count lookups)."""
        self.model.image_feature_cache = ImageFeatureCache(max_images)
        return self.model.image_feature_cache

    def disable_image_feature_cache(self) -> None:
        self.model.image_feature_cache = None

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        perceiver_input_ids: torch.LongTensor | None = None,
        perceiver_attention_mask: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        past_key_values: Cache | None = None,
        image_grid_thw: torch.Tensor | None = None,
        **kwargs,
    ) -> PrealignOutput:
        """`cache` and `past_key_values` are the same argument under its new and its old name."""
        outputs = self.model(
            input_ids=input_ids,
            pixel_values=pixel_values,
            perceiver_input_ids=perceiver_input_ids,
            perceiver_attention_mask=perceiver_attention_mask,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=resolve_cache(cache, past_key_values),
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            image_grid_thw=image_grid_thw,
            **kwargs,
        )
        hidden = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return PrealignOutput(
            loss=loss,
            logits=logits,
            **{CACHE_NAME: cache_of(outputs)},
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            image_hidden_states=outputs.image_hidden_states,
        )

    def generate(self, inputs: torch.Tensor | None = None, generation_config=None, **kwargs):
        """transformers' `generate`, refusing a prompt that with the new tokens asked for (or up to
        `max_length`) would not fit the target's context (`ContextLengthError`)."""
        prompt = inputs if inputs is not None else kwargs.get("input_ids")
        if prompt is not None:
            config = generation_config or self.generation_config
            new = kwargs.get("max_new_tokens", config.max_new_tokens)
            prompt_tokens = prompt.shape[-1]
            if new is None:
                new = max(0, kwargs.get("max_length", config.max_length) - prompt_tokens)
            check_context(prompt_tokens, new, self.config.text_config.max_position_embeddings)
        return super().generate(inputs, generation_config, **kwargs)

    def _expand_inputs_for_generation(
        self, expand_size: int = 1, is_encoder_decoder: bool = False, input_ids=None, **model_kwargs
    ):
        """transformers repeats every input row by row for beam search and several sequences per
        prompt; the per-image inputs (a sample's several images, a native-resolution tower's patch
        rows) are repeated sample by sample instead, so every copy of a sample keeps its images."""
        if expand_size == 1:
            return input_ids, model_kwargs
        images = {k: model_kwargs.pop(k) for k in PER_IMAGE_INPUTS if k in model_kwargs}
        images = {k: v for k, v in images.items() if v is not None}
        input_ids_before = input_ids
        input_ids, model_kwargs = super()._expand_inputs_for_generation(
            expand_size, is_encoder_decoder, input_ids, **model_kwargs
        )
        if images:
            if input_ids_before is None:
                raise ValueError(
                    "Expanding image inputs (num_beams or num_return_sequences > 1) needs input_ids: they "
                    "say which images belong to which sample."
                )
            per_sample = (input_ids_before == self.config.image_start_token_id).sum(-1).tolist()
            order, start = [], 0
            for count in per_sample:
                order += list(range(start, start + count)) * expand_size
                start += count
            model_kwargs.update(select_images(images, order))
        return input_ids, model_kwargs

    def prepare_inputs_for_generation(self, *args, is_first_iteration: bool = False, **kwargs):
        cache = resolve_cache(kwargs.pop("cache", None), kwargs.pop("past_key_values", None))
        if cache is not None:
            kwargs[CACHE_NAME] = cache
        if is_first_iteration:
            refuse_right_padding(kwargs.get("attention_mask"))
        inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        # Decode steps read the KV cache; the perceiver inputs are as prefill-only as pixel_values.
        if not is_first_iteration and kwargs.get("use_cache", True):
            for key in PREFILL_ONLY_INPUTS:
                inputs.pop(key, None)
        return inputs

    def target_lm(self) -> PreTrainedModel:
        """The target LM and its head as an ordinary HF causal LM, sharing this model's tensors.

        What a small VLM hands DPA as its perceiver, and what `prealign export` saves so that
        text-only harnesses (lm-eval, vLLM) can score language forgetting.
        """
        with torch.device("meta"):
            lm = AutoModelForCausalLM.from_config(self.config.text_config)
        setattr(lm, lm.base_model_prefix, self.model.language_model)
        lm.set_output_embeddings(self.lm_head)
        return lm

    def save_pretrained(self, save_directory: str | PathLike, *args, **kwargs) -> None:
        # transformers logs an error and returns when the target is a file: nothing saved, no error.
        if os.path.isfile(save_directory):
            raise FileExistsError(f"Cannot save the model to {save_directory}: it is a file, not a folder.")
        super().save_pretrained(save_directory, *args, **kwargs)

    @classmethod
    def from_parts(
        cls,
        vision_model: PartSpec,
        text_model: PartSpec,
        perceiver_text_model: PartSpec | None = None,
        processor=None,
        dtype: torch.dtype | None = None,
        attn_implementation: str | None = None,
        **config_kwargs,
    ) -> PrealignForConditionalGeneration:
        """Assemble a model from pretrained parts; the parts keep their weights exactly.

        Each part is a local folder, a hub id or a model object. `vision_model` may be a vision tower
        or a dual encoder (CLIP/SigLIP) whose `.vision_model` is taken. `perceiver_text_model=None`
        builds the LLaVA baseline. `dtype` applies to parts loaded from folders or the hub,
        `attn_implementation` to every part (without it each keeps the one it was loaded with).
        Only the projector and aligner (and, for the MLP ablation, the stand-in) are new. With a
        `processor`, the token ids come from it and the embedding tables grow to its tokenizers'
        lengths, and the processor is configured to match the model.
        """
        load_kwargs = {k: v for k, v in (("dtype", dtype), ("attn_implementation", attn_implementation)) if v}
        vision = load_vision_tower(vision_model, **load_kwargs)
        text = load_causal_lm(text_model, **load_kwargs)
        perceiver = (
            None if perceiver_text_model is None else load_causal_lm(perceiver_text_model, **load_kwargs)
        )
        if config_kwargs.get("projector_type") == "merger":
            vision = with_merger_width(vision, (perceiver or text).config.hidden_size)
        if processor is not None:
            config_kwargs = {**processor.token_ids(), **config_kwargs}
        # Without an explicit choice each part keeps the attention it was loaded with; the config
        # would otherwise reset all of them to its default (SDPA). The model reports the target's.
        config_kwargs["attn_implementation"] = attn_implementation or {
            name: part.config._attn_implementation
            for name, part in (
                ("", text),
                ("vision_config", vision),
                ("text_config", text),
                ("perceiver_text_config", perceiver),
            )
            if part is not None
        }
        config = PrealignConfig(
            vision_config=vision.config,
            text_config=text.config,
            perceiver_text_config=perceiver.config if perceiver is not None else None,
            **config_kwargs,
        )
        with torch.device("meta"):
            model = cls(config)
        model.model.vision_tower = vision
        model.model.set_language_model(text.base_model)
        model.lm_head = text.get_output_embeddings()
        if perceiver is not None:
            if config.perceiver_blocks == "lm":
                model.model.perceiver.set_language_model(perceiver.base_model)
            else:
                model.model.perceiver.embed_tokens = perceiver.get_input_embeddings()
        reference = next(text.parameters())
        model._materialize_new_modules(reference.device, dtype or reference.dtype)
        if processor is not None:
            processor.configure_for(config)
            model.resize_to_processor(processor)
        return model

    def _materialize_new_modules(self, device: torch.device, dtype: torch.dtype) -> None:
        """Initialise the modules no part supplied (projector, aligner, ...) on the target's device."""
        for module in self.modules():
            direct = list(module.parameters(recurse=False))
            if direct and any(p.is_meta for p in direct):
                module.to_empty(device=device, recurse=False)
                module.to(dtype)
                self._init_weights(module)

    def resize_to_processor(self, processor) -> None:
        """Grow the embedding tables to hold the tokenizers' ids (tokens added for the image span).

        A table is never shrunk: checkpoints such as Qwen's have more rows (151,936) than their
        tokenizer has tokens (151,669), and the span may use the tokenizer's own vision tokens.
        Generation never emits the placeholder or markers: a generated `<image>` would have no
        features to fill it.
        """
        rows = self.get_input_embeddings().weight.shape[0]
        if len(processor.tokenizer) > rows:
            self.resize_token_embeddings(len(processor.tokenizer))
        if self.config.uses_perceiver:
            perceiver_rows = self.model.perceiver.get_input_embeddings().weight.shape[0]
            if len(processor.perceiver_tokenizer) > perceiver_rows:
                self.model.perceiver.resize_token_embeddings(len(processor.perceiver_tokenizer))
                self.config.perceiver_text_config.vocab_size = len(processor.perceiver_tokenizer)
        ids = processor.token_ids()
        self.generation_config.suppress_tokens = sorted(
            {ids["image_token_id"], ids["image_start_token_id"], ids["image_end_token_id"]}
        )


def refuse_right_padding(attention_mask: torch.Tensor | None) -> None:
    """Generation appends after the last position: a right-padded prompt would continue from padding."""
    if attention_mask is not None and attention_mask.ndim == 2 and not bool(attention_mask[:, -1].all()):
        rows = (attention_mask[:, -1] == 0).nonzero().flatten().tolist()
        raise ValueError(
            f"generate() got a right-padded batch (rows {rows} end in padding), so those prompts would "
            "be continued from pad tokens. Pad prompts on the left: processor(..., padding_side='left') "
            "(the default) or PrealignCollator(processor, padding_side='left')."
        )
