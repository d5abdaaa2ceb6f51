"""The nano world's data: deterministic, real LLaVA format, benchmarks with scoring rules, held-out text."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter

import pytest

from prealign.cli import main
from prealign.data import DataSource, LlavaDataset
from prealign.data.check import check_data
from prealign.data.encoding import IGNORE_INDEX
from prealign.nano import BENCHMARK_GROUPS, NanoDataSpec, build_nano_data, render, sample_scene
from prealign.nano.language import (
    arithmetic,
    fact,
    is_held_out_pair,
    scene_question,
    text_scene_question,
)
from prealign.processing import PrealignProcessor
from prealign.tiny import tiny_image_processor

SMALL = NanoDataSpec(pretrain=30, instruct=40, corpus=300, benchmark=12, image_size=36)


def digest(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano")
    return out, build_nano_data(out, SMALL)


def test_same_seed_gives_byte_identical_files(world, tmp_path):
    out, _ = world
    build_nano_data(tmp_path / "again", SMALL)
    assert digest(out) == digest(tmp_path / "again")
    assert len(digest(out)) > SMALL.pretrain + SMALL.instruct


def test_another_seed_gives_another_world(world, tmp_path):
    out, _ = world
    build_nano_data(tmp_path / "other", NanoDataSpec(**{**SMALL.__dict__, "seed": 1}))
    assert digest(out)["pretrain.json"] != digest(tmp_path / "other")["pretrain.json"]


def test_rendering_is_deterministic_and_shows_the_objects():
    scene = sample_scene(random.Random(5), min_objects=3, max_objects=3)
    a, b = render(scene, 48), render(scene, 48)
    assert a.tobytes() == b.tobytes()
    assert len(set(a.getdata())) >= 3  # background plus the objects' colours


def test_the_data_goes_through_the_real_data_path_without_errors(world):
    _, paths = world
    processor = PrealignProcessor(tiny_image_processor(image_size=36), _tokenizer(paths), num_image_tokens=16)
    report = check_data(
        [paths["pretrain"], paths["instruct"]], processor, image_root=paths["images"], progress=False
    )
    assert report.records == SMALL.pretrain + SMALL.instruct and report.errors() == {}
    assert report.images_per_record[0] > 0  # some text-only instruction records
    dataset = LlavaDataset([DataSource(paths["instruct"], paths["images"])], processor)
    record = json.loads(paths["instruct"].read_text())[0]
    sample = dataset[0]
    supervised = [
        t
        for t, label in zip(sample["input_ids"].tolist(), sample["labels"].tolist(), strict=True)
        if label != IGNORE_INDEX
    ]
    tok = processor.tokenizer
    expected = []
    for turn in record["conversations"][1::2]:
        expected += tok(turn["value"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert supervised == expected
    assert tok.unk_token_id not in sample["input_ids"].tolist()  # the closed vocabulary covers the data


def _tokenizer(paths):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(paths["tokenizer"])


def test_benchmarks_hold_every_group_with_consistent_scoring_rules(world):
    _, paths = world
    for group in BENCHMARK_GROUPS:
        items = json.loads(paths[f"bench_{group}"].read_text())
        assert len(items) == SMALL.benchmark
        for item in items:
            assert item["group"] == group and ("image" in item) == (group != "text")
            answer = item["answer"]
            rule = {
                "yes_no": answer in ("yes", "no"),
                "choice": answer in "ABCD" and len(answer) == 1,
                "number": answer.isdigit(),
                "exact": bool(answer),
            }
            assert rule[item["scoring"]], item


def test_held_out_arithmetic_never_appears_in_training_text(world):
    _, paths = world
    training_text = paths["corpus"].read_text() + paths["instruct"].read_text()
    for a, b in re.findall(r"what is (\d+) plus (\d+)\?", training_text):
        assert not is_held_out_pair(int(a), int(b))
    bench = json.loads(paths["bench_text"].read_text())
    held = [
        re.match(r"what is (\d+) plus (\d+)\?", i["question"]) for i in bench if i["kind"] == "arithmetic"
    ]
    assert held and all(is_held_out_pair(int(m[1]), int(m[2])) for m in held)


def test_spatial_questions_name_only_unique_objects():
    rng = random.Random(0)
    for _ in range(300):
        scene = sample_scene(rng, min_objects=2, max_objects=4)
        qa = scene_question(scene, rng)
        if qa.kind == "spatial":
            named = re.findall(r"the (\w+) (\w+)", qa.question)
            assert all(scene.count(shape, colour) == 1 for colour, shape in named)


def test_nano_data_command_writes_the_world(tmp_path, capsys):
    assert (
        main(
            [
                "nano",
                "data",
                str(tmp_path / "w"),
                "--pretrain",
                "5",
                "--instruct",
                "5",
                "--corpus",
                "20",
                "--benchmark",
                "3",
            ]
        )
        == 0
    )
    manifest = json.loads((tmp_path / "w/manifest.json").read_text())
    assert manifest["spec"]["pretrain"] == 5 and (tmp_path / "w/tokenizer/tokenizer.json").is_file()
    assert "nano world written" in capsys.readouterr().out


def _oracle(scene, qa) -> str:
    """Answer a yes/no question again from the scene, by parsing the question's own words."""
    if qa.kind == "exists":
        colour, shape = re.match(r"is there a (\w+) (\w+)\?", qa.question).groups()
        holds = scene.count(shape, colour) > 0
    else:
        a, b = re.match(r"are there more (\w+) objects than (\w+) objects", qa.question).groups()
        holds = scene.count(colour=a) > scene.count(colour=b)
    return "yes" if holds else "no"


def test_spatial_answers_name_the_relation_on_each_axis_and_spread_over_all_eight():
    rng = random.Random(4)
    answers: list[str] = []
    while len(answers) < 800:
        scene = sample_scene(rng)
        qa = scene_question(scene, rng)
        if qa.kind != "spatial":
            continue
        pattern = r"where is the (\w+) (\w+) relative to the (\w+) (\w+)\?"
        c1, s1, c2, s2 = re.match(pattern, qa.question).groups()
        first, second = (
            next(o for o in scene.objects if (o.colour, o.shape) == cs) for cs in ((c1, s1), (c2, s2))
        )
        words = qa.answer.split(" and ")
        assert ("above" in words) == (first.row < second.row), (scene, qa)
        assert ("below" in words) == (first.row > second.row), (scene, qa)
        assert ("left" in words) == (first.column < second.column), (scene, qa)
        assert ("right" in words) == (first.column > second.column), (scene, qa)
        answers.append(qa.answer)
    counts = Counter(answers)
    assert len(counts) == 8 and max(counts.values()) / len(answers) < 0.2, counts  # no cheap majority


def test_yes_no_questions_are_right_and_balanced():
    rng = random.Random(3)
    answers: dict[str, list[str]] = {"exists": [], "compare": []}
    while min(len(v) for v in answers.values()) < 300:
        scene = sample_scene(rng)
        qa = scene_question(scene, rng)
        if qa.kind in answers:
            assert qa.answer == _oracle(scene, qa), (scene, qa)
            answers[qa.kind].append(qa.answer)
    for kind, given in answers.items():
        assert 0.4 < given.count("yes") / len(given) < 0.6, kind  # "always no" cannot score well


def test_questions_carry_the_number_of_objects_they_ask_about(world):
    rng = random.Random(5)
    for _ in range(100):
        scene = sample_scene(rng)
        others = [sample_scene(rng) for _ in range(3)]
        assert scene_question(scene, rng, distractors=others).objects == len(scene.objects)
        assert text_scene_question(scene, rng).objects == len(scene.objects)
    assert arithmetic(rng, held_out=False).objects == fact(rng).objects == 0
    _, paths = world
    for group in BENCHMARK_GROUPS:
        for item in json.loads(paths[f"bench_{group}"].read_text()):
            assert (item["objects"] == 0) == (item["kind"] in ("arithmetic", "fact")), item


def _at(scene, position: str):
    return next(o for o in scene.objects if o.position == position)


def test_lookup_questions_name_one_object_and_answer_from_it():
    rng = random.Random(4)
    seen = {"position_of": 0, "colour_choice": 0}
    while min(seen.values()) < 200:
        scene = sample_scene(rng)
        qa = scene_question(scene, rng)
        if qa.kind == "position_of":
            colour, shape = re.fullmatch(r"where is the (\w+) (\w+)\?", qa.question).groups()
            assert scene.count(shape, colour) == 1, (scene, qa)
            assert _at(scene, qa.answer).colour == colour and _at(scene, qa.answer).shape == shape
        elif qa.kind == "colour_choice":
            options = dict(re.findall(r"([ABCD])\. (\w+)", qa.question))
            shape, position = re.search(r"colour of the (\w+) at (\w+ \w+)\?$", qa.question).groups()
            obj = _at(scene, position)
            assert obj.shape == shape and len(set(options.values())) == 4, (scene, qa)
            assert [letter for letter, c in options.items() if c == obj.colour] == [qa.answer]
        else:
            continue
        seen[qa.kind] += 1


def test_the_tokenizer_does_not_depend_on_seed_or_sizes(world, tmp_path):
    _, paths = world
    other = build_nano_data(
        tmp_path / "other", NanoDataSpec(seed=7, pretrain=3, instruct=3, corpus=5, benchmark=2)
    )
    assert (paths["tokenizer"] / "tokenizer.json").read_bytes() == (
        other["tokenizer"] / "tokenizer.json"
    ).read_bytes()


def test_a_word_outside_the_vocabulary_is_reported():
    from prealign.nano.tokenizer import check_vocabulary, nano_tokenizer

    tokenizer = nano_tokenizer()
    check_vocabulary(tokenizer, ["is there a red circle? answer yes or no."])
    with pytest.raises(ValueError, match="'hexagon'"):
        check_vocabulary(tokenizer, ["is there a red hexagon?"])
