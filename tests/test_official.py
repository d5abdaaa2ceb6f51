"""`prealign convert official`: the authors' checkpoint layout, converted, reproduces their own code.

The fixture (tests/fixtures/authors_dpa) was recorded by running the authors' model classes, as
released, with transformers 4.57.1 (make_fixture.py beside it): a tiny checkpoint in their layout
(weights rebuilt from weights.py), the inputs their evaluation builds and what their model computes.
"""

from __future__ import annotations

import gzip
import io
import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from transformers import AutoModelForImageTextToText, AutoProcessor

from prealign.cli import main
from prealign.official import convert_official, resolve_parts

FIXTURE = Path(__file__).parent / "fixtures" / "authors_dpa"
sys.path.insert(0, str(FIXTURE))
from weights import authors_weight  # noqa: E402

EXPECTED = load_file(FIXTURE / "expected.safetensors")
TEXTS = json.loads((FIXTURE / "texts.json").read_text())
VISION_END = 151653


def authors_release(folder: Path, drop: str | None = None, extra: str | None = None, shards: int = 1) -> Path:
    """The fixture's checkpoint folder in the authors' layout: their config, the sub-config folders
    (with Qwen's vocabulary), and `pytorch_model.bin` with every tensor their model saves, tied
    copies sharing storage as torch.save writes them."""
    shutil.copytree(FIXTURE / "release", folder)
    for part in ("qwen3_4b", "qwen2_5_vl_processor"):
        for name in ("vocab.json", "merges.txt"):
            with gzip.open(FIXTURE.parent / "qwen_tokenizer" / f"{name}.gz", "rb") as packed:
                (folder / "parts" / part / name).write_bytes(packed.read())
    tensors, state = {}, {}
    for key, shape, leader in json.loads((folder / "keys.json").read_text()):
        if key == drop:
            continue
        if leader not in tensors:
            tensors[leader] = authors_weight(leader, tuple(shape))
        state[key] = tensors[leader]
    if extra:
        state[extra] = torch.zeros(2)
    if shards == 1:
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    keys = sorted(state)  # as save_pretrained shards a large model: files and an index naming them
    index = {}
    for shard in range(shards):
        name = f"pytorch_model-{shard + 1:05d}-of-{shards:05d}.bin"
        part = {key: state[key] for key in keys[shard::shards]}
        torch.save(part, folder / name)
        index.update(dict.fromkeys(part, name))
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": index}))
    return folder


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("official")
    return convert_official(authors_release(root / "release"), root / "converted")


def images_of(case: str) -> list[Image.Image]:
    return [Image.open(FIXTURE / "images" / name).convert("RGB") for name in TEXTS[case]["images"]]


@pytest.mark.parametrize("case", ["single", "pair"])  # one non-square image; a left-padded batch of two sizes
def test_the_converted_model_prompts_and_computes_as_the_authors_code(converted, case):
    model = AutoModelForImageTextToText.from_pretrained(converted).eval()
    processor = AutoProcessor.from_pretrained(converted)
    theirs = {key.split(".", 1)[1]: value for key, value in EXPECTED.items() if key.startswith(f"{case}.")}
    # Our processor, the way evaluation and chat use it, builds their evaluation's inputs.
    conversations = [
        [processor.user_turn(q, [image])]
        for q, image in zip(TEXTS[case]["questions"], images_of(case), strict=True)
    ]
    ours = processor(
        text=[processor.apply_chat_template(c) for c in conversations],
        images=images_of(case),
        instructions=[processor.perceiver_instruction(c) for c in conversations],
    )
    assert torch.equal(ours["input_ids"], theirs["input_ids"])
    assert torch.equal(ours["attention_mask"], theirs["attention_mask"])
    assert torch.equal(ours["image_grid_thw"], theirs["image_grid_thw"])
    torch.testing.assert_close(ours["pixel_values"], theirs["pixel_values"], rtol=0, atol=1e-6)
    for row in range(len(conversations)):  # their perceiver row, up to the end of the image span
        mine = ours["perceiver_input_ids"][row][ours["perceiver_attention_mask"][row].bool()].tolist()
        full = theirs["perceiver_input_ids"][row][theirs["perceiver_attention_mask"][row].bool()].tolist()
        assert mine == full[: full.index(VISION_END) + 1]
    # The same inputs through the converted model: their perceiver states and logits.
    states = []
    model.model.aligner.register_forward_hook(lambda _m, args, _o: states.append(args[0]))
    mask = theirs["attention_mask"]
    with torch.no_grad():
        logits = model(
            input_ids=theirs["input_ids"],
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
            pixel_values=theirs["pixel_values"],
            image_grid_thw=theirs["image_grid_thw"],
            perceiver_input_ids=theirs["perceiver_input_ids"],
            perceiver_attention_mask=theirs["perceiver_attention_mask"],
        ).logits
    # Recorded with 2 CPU threads, where both give 0.0 difference; other thread counts sum in another
    # order (1 thread: logits of about +-50 differ by up to 2.3e-5), hence a tolerance of fp32 rounding.
    torch.testing.assert_close(states[0], theirs["span_states"], rtol=0, atol=1e-5)
    real = mask.bool()
    torch.testing.assert_close(logits[..., :1024][real], theirs["logits_head"][real], rtol=0, atol=1e-4)
    torch.testing.assert_close(
        logits.logsumexp(-1)[real], theirs["logits_logsumexp"][real], rtol=0, atol=1e-4
    )


def test_the_converted_folder_is_the_authors_architecture(converted):
    model = AutoModelForImageTextToText.from_pretrained(converted)
    config = model.config
    assert config.projector_type == "merger" and config.perceiver_mrope_section == [2, 3, 3]
    assert config.perceiver_text_config.rope_parameters["rope_theta"] == 5000.0  # their perceiver_config's
    assert config.text_mrope_section is None  # the target keeps 1-D positions
    assert model.get_input_embeddings().weight.shape[0] == 151_936
    processor = AutoProcessor.from_pretrained(converted)
    assert processor.system_prompt == "You are a helpful assistant." and processor.perceiver_prompt == "chat"
    batch = processor.apply_chat_template(
        [processor.user_turn("What is in the picture?", images_of("single"))], tokenize=True
    )
    out = model.generate(**batch, max_new_tokens=3, min_new_tokens=3, do_sample=False)
    assert out.shape[1] == batch["input_ids"].shape[1] + 3


@pytest.mark.parametrize(
    "change,message",
    [
        ({"drop": "model.linear_align_dim.2.bias"}, r"missing \(1\): model\.aligner\.2\.bias"),
        (
            {"extra": "model.perceiver.extra_head.weight"},
            r"not in the architecture \(1\): model\.perceiver\.extra_head",
        ),
        ({"drop": "lm_head.weight"}, r"missing lm_head\.weight"),
    ],
)
def test_a_missing_or_extra_tensor_is_an_error_naming_it(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        convert_official(authors_release(tmp_path / "release", **change), tmp_path / "out")


def test_a_tied_copy_that_differs_is_an_error(tmp_path):
    release = authors_release(tmp_path / "release")
    state = torch.load(release / "pytorch_model.bin", weights_only=True)
    state["lm_head.weight"] = state["lm_head.weight"].clone() + 1
    torch.save(state, release / "pytorch_model.bin")
    with pytest.raises(
        ValueError, match=r"lm_head\.weight should be a tied copy of model\.thinker\.lm_head\.weight"
    ):
        convert_official(release, tmp_path / "out")


def test_parts_named_by_hub_id_come_from_the_command_line(tmp_path, capsys, monkeypatch):
    release = authors_release(tmp_path / "release")
    config = json.loads((release / "config.json").read_text())
    hub_ids = {"vit_path": "Qwen/Qwen2.5-VL-3B-Instruct", "llm_path": "Qwen/Qwen3-0.6B"}
    config["perceiver_config"].update(hub_ids)
    config.update(thinker_name_or_path="Qwen/Qwen3-4B", t_tokenizer_name_or_path="Qwen/Qwen3-4B")
    (release / "config.json").write_text(json.dumps(config))
    parts = resolve_parts(release, config, {})
    assert (parts.vit, parts.thinker) == ("Qwen/Qwen2.5-VL-3B-Instruct", "Qwen/Qwen3-4B")  # as named
    assert parts.perceiver_processor == str(release / "parts/qwen2_5_vl_processor")  # relative: in SRC
    local = release / "parts"
    args = ["convert", "official", str(release), str(tmp_path / "out"), "--vit", str(local / "vit"),
            "--llm", str(local / "qwen3_0_6b"), "--thinker", str(local / "qwen3_4b"),
            "--thinker-tokenizer", str(local / "qwen3_4b")]  # fmt: skip
    assert main(args) == 0
    assert "written to" in capsys.readouterr().out
    # The converted folder chats.
    monkeypatch.setattr(
        "sys.stdin", io.StringIO(f"/image {FIXTURE / 'images' / 'wide.png'}\nwhat is this?\n/quit\n")
    )
    assert main(["chat", str(tmp_path / "out"), "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.count("assistant: ") == 1


def test_prealign_eval_answers_with_the_converted_folder(converted, tmp_path):
    bench = [
        {
            "id": "a",
            "question": "Which? A. red B. blue",
            "answer": "A",
            "scoring": "choice",
            "image": "wide.png",
        },
        {"id": "b", "question": "Is it tall?", "answer": "yes", "scoring": "yes_no", "image": "tall.png"},
    ]
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    args = ["eval", str(converted), str(tmp_path / "bench.json"), "--out", str(tmp_path / "eval"),
            "--image-root", str(FIXTURE / "images"), "--max-new-tokens", "3"]  # fmt: skip
    assert main(args) == 0
    predictions = (tmp_path / "eval" / "bench.predictions.jsonl").read_text().splitlines()
    assert len(predictions) == 2
    assert json.loads((tmp_path / "eval" / "bench.scores.json").read_text())["n"] == 2


def test_a_sharded_release_converts_to_the_same_weights(converted, tmp_path):
    out = convert_official(authors_release(tmp_path / "release", shards=3), tmp_path / "out")
    assert load_file(out / "model.safetensors").keys() == load_file(converted / "model.safetensors").keys()
    for key, value in load_file(out / "model.safetensors").items():
        assert torch.equal(value, load_file(converted / "model.safetensors")[key]), key
