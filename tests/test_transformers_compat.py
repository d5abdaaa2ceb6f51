"""What the code relies on in transformers, checked on the installed version (locked, latest, lowest).

transformers 5.24 renamed the KV cache from `past_key_values` to `cache`; these tests keep both
spellings working and our own calls free of the deprecation warnings, and fail loudly when a
private Trainer hook we override stops being called.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import re
import warnings
from collections.abc import Iterator

import pytest
import torch
from test_model import mixed_batch
from test_training import save_tiny, settings_for, workspace  # noqa: F401 (workspace is a fixture)
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.utils import logging as hf_logging

from prealign.modeling.cache_naming import CACHE_NAME, cache_of
from prealign.modeling.model import PrealignOutput
from prealign.tiny import tiny_model
from prealign.training import build_trainer
from prealign.training.trainer import EpochSeededLengthGroupedSampler

MENTIONS_THE_CACHE = re.compile(r"past_key_values|cache_params|\bcache\b")


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextlib.contextmanager
def messages_about_the_cache() -> Iterator[list[str]]:
    """Python warnings and transformers log warnings that mention the cache, raised in the block."""
    hf_logging.warning_once.cache_clear()  # an earlier test may have used up a `warning_once`
    handler, found = _Collect(), []
    root = hf_logging.get_logger()
    root.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield found
    finally:
        root.removeHandler(handler)
    found += [m for m in [str(w.message) for w in caught] + handler.messages if MENTIONS_THE_CACHE.search(m)]


def test_the_collector_sees_transformers_deprecation_warnings():
    """The check below would pass vacuously if it could not see the warnings it looks for."""
    with messages_about_the_cache() as found:
        warnings.warn("`past_key_values` is deprecated. Use `cache` instead.", FutureWarning, stacklevel=1)
        hf_logging.get_logger("transformers.utils.generic").warning_once("`cache_params` are deprecated.")
    assert len(found) == 2


def test_output_is_transformers_own_causal_lm_output_plus_image_features():
    assert issubclass(PrealignOutput, CausalLMOutputWithPast)
    names = list(PrealignOutput.__dataclass_fields__)
    assert CACHE_NAME in names and names[-1] == "image_hidden_states"


@pytest.mark.parametrize("variant", ["baseline", "dpa"])
def test_forward_and_generate_raise_no_cache_deprecation_warning(variant, images):
    model, processor = tiny_model(variant)
    model.eval()
    batch = mixed_batch(processor, images, padding_side="left")
    with messages_about_the_cache() as found, torch.no_grad():
        out = model(**batch, use_cache=True)
        assert isinstance(cache_of(out), Cache) and out[CACHE_NAME] is cache_of(out)
        model.generate(**batch, max_new_tokens=4, min_new_tokens=4, do_sample=False)
    assert found == []


def test_training_raises_no_cache_deprecation_warning(workspace):  # noqa: F811
    tmp_path, data = workspace
    trainer = build_trainer(settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"), max_steps=2))
    with messages_about_the_cache() as found:
        trainer.train()
        trainer.evaluate(trainer.train_dataset)  # the Trainer's prediction step drops the cache by name
    assert found == []


@pytest.mark.parametrize("spelling", ["cache", "past_key_values"])
def test_a_decode_step_accepts_the_cache_under_either_name(images, spelling):
    model, processor = tiny_model("dpa")
    model.eval()
    batch = mixed_batch(processor, images, padding_side="left")
    with torch.no_grad():
        prefill = model(**batch, use_cache=True)
        next_ids = prefill.logits[:, -1:].argmax(-1)
        mask = torch.cat([batch["attention_mask"], torch.ones_like(next_ids)], dim=1)
        reference = model(input_ids=next_ids, attention_mask=mask, cache=copy.deepcopy(cache_of(prefill)))
        step = model(input_ids=next_ids, attention_mask=mask, **{spelling: cache_of(prefill)})
        assert torch.equal(step.logits, reference.logits)
        with pytest.raises(ValueError, match="not both"):
            model(input_ids=next_ids, cache=cache_of(step), past_key_values=cache_of(step))


def test_length_grouping_reaches_the_trainers_dataloader(workspace):  # noqa: F811
    """`PrealignTrainer._get_train_sampler` overrides a private hook: fail loudly if upstream drops it."""
    tmp_path, data = workspace
    settings = settings_for(tmp_path, data, save_tiny(tmp_path / "ckpt"), group_by_length=True)
    trainer = build_trainer(settings)
    sampler = trainer.get_train_dataloader().batch_sampler.sampler
    assert isinstance(sampler, EpochSeededLengthGroupedSampler)
    expected = EpochSeededLengthGroupedSampler(
        trainer.args.train_batch_size, trainer.train_dataset.approximate_lengths(), trainer.args.seed
    )
    assert list(sampler) == list(expected)
