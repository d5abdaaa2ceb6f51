"""`prealign export --part target-lm`: the trained target LM, standalone, answers as the VLM does."""

from __future__ import annotations

import torch
from conftest import user_prompt
from transformers import AutoModelForCausalLM, AutoTokenizer

from prealign.cli import main
from prealign.tiny import tiny_model


def test_the_exported_target_lm_gives_the_vlms_text_only_logits(tmp_path, capsys):
    model, processor = tiny_model("dpa")
    model.save_pretrained(tmp_path / "vlm")
    processor.save_pretrained(tmp_path / "vlm")
    assert main(["export", str(tmp_path / "vlm"), str(tmp_path / "lm"), "--part", "target-lm"]) == 0
    assert "written to" in capsys.readouterr().out
    lm = AutoModelForCausalLM.from_pretrained(tmp_path / "lm").eval()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "lm")
    assert tokenizer.get_vocab() == processor.tokenizer.get_vocab()  # image tokens included
    prompt = user_prompt(processor, "How many shapes are there? Count them.")
    ids = tokenizer([prompt], add_special_tokens=False, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.equal(lm(**ids).logits, model(**ids).logits)
