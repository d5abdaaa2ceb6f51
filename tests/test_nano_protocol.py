"""`prealign nano run`: the protocol at its smallest size - every unit, the report, resuming."""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from prealign.nano import NanoDataSpec
from prealign.nano import protocol as protocol_module
from prealign.nano.protocol import PRESETS, NanoProtocol, run_protocol
from prealign.nano.report import COLUMNS

pytestmark = pytest.mark.e2e

SMALLEST = NanoDataSpec(pretrain=8, instruct=8, corpus=4, benchmark=3, image_size=36)
STEPS = ("max_steps=2", "global_batch_size=2", "per_device_batch_size=2", "save_steps=1")


@pytest.fixture(scope="module")
def tiny_backbones(tmp_path_factory):
    from prealign.nano.backbones import TINY_BUDGET, build_backbones

    out = tmp_path_factory.mktemp("tiny_backbones")
    build_backbones(out, budget=TINY_BUDGET)
    return out


def _protocol(out: Path, backbones: Path, **changes) -> NanoProtocol:
    quick = NanoProtocol(
        out=out,
        preset="quick",
        backbones=backbones,
        data=SMALLEST,
        training_overrides=STEPS,
        alignment_samples=4,
        throughput_repeats=1,
        throughput_new_tokens=2,
    )
    return replace(quick, **changes)


def _numbers(report: dict) -> dict:
    """What a report measured, less the wall times (which differ run to run)."""
    return {k: v for k, v in report.items() if k not in ("units", "wall_s", "compute_s", "cost")}


@pytest.fixture(scope="module")
def quick_run(tiny_backbones, tmp_path_factory):
    out = tmp_path_factory.mktemp("quick")
    return out, run_protocol(_protocol(out, tiny_backbones))


def test_the_quick_preset_writes_a_report_with_numbers_for_every_model(quick_run):
    out, report = quick_run
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(report))
    assert set(report["models"]) == {"perceiver-vlm", "baseline", "dpa"}
    assert len(report["units"]) == len(_protocol(out, None).planned_units())  # the progress line's total
    assert "seed-0/perceiver-vlm/stage2" not in report["units"]  # DPA starts from the shipped one
    assert report["shipped_perceiver_vlm"] and "seed-0/perceiver-vlm/eval" in report["units"]
    for name, model in report["models"].items():
        for column in COLUMNS:
            assert 0.0 <= model["mean"][column] <= 1.0, (name, column)
    markdown = (out / "report.md").read_text()
    for heading in ("## Main table", "## Text forgetting", "## Cost", "## The paper's claims", "MIR"):
        assert heading in markdown
    for plot in ("scores.png", "training_curves.png", "modality_gap.png", "layer_similarity.png"):
        assert (out / plot).stat().st_size > 1000, plot
    claims = {c["claim"]: c for c in report["claims"]}
    assert {"DPA > baseline on Multi Avg", "DPA's MIR below the baseline's"} <= set(claims)
    assert all("one seed" in c["verdict"] for c in claims.values())
    # The verdict follows from the numbers by the stated rule, not by hand.
    multi = claims["DPA > baseline on Multi Avg"]
    dpa, baseline = (
        report["models"]["dpa"]["mean"]["multi_avg"],
        report["models"]["baseline"]["mean"]["multi_avg"],
    )
    assert multi["ours"] == pytest.approx(dpa - baseline)
    assert multi["verdict"].startswith(
        "agrees" if dpa > baseline else "disagrees" if dpa < baseline else "inc"
    )
    cost = report["cost"]
    assert cost["parameters"]["dpa"] > cost["parameters"]["baseline"]
    assert cost["forward_flops"]["dpa"] > cost["forward_flops"]["baseline"]


def test_a_second_run_reuses_every_unit_and_gives_the_same_report(quick_run, tiny_backbones, capsys):
    out, first = quick_run
    again = run_protocol(_protocol(out, tiny_backbones))
    assert all(u["reused"] for u in again["units"].values())
    assert _numbers(again) == _numbers(first)
    assert "running" not in capsys.readouterr().out


def test_killed_and_run_again_it_continues_and_reports_what_an_uninterrupted_run_does(
    quick_run, tiny_backbones, tmp_path, monkeypatch
):
    _, uninterrupted = quick_run
    real_train = protocol_module.train_stage
    calls = []

    def dies_in_dpa_stage2(settings):
        calls.append(settings.output_dir)
        if settings.output_dir.endswith("dpa/stage2"):
            raise KeyboardInterrupt  # as from Ctrl-C
        return real_train(settings)

    monkeypatch.setattr(protocol_module, "train_stage", dies_in_dpa_stage2)
    with pytest.raises(KeyboardInterrupt):
        run_protocol(_protocol(tmp_path, tiny_backbones))
    monkeypatch.setattr(protocol_module, "train_stage", real_train)
    resumed = run_protocol(_protocol(tmp_path, tiny_backbones))
    reused = {name for name, u in resumed["units"].items() if u["reused"]}
    assert {"backbones", "seed-0/data", "seed-0/baseline/stage2", "seed-0/perceiver-vlm/eval"} <= reused
    assert "seed-0/dpa/stage2" not in reused
    assert _numbers(resumed) == _numbers(uninterrupted)


def _weights(folder: Path) -> dict[str, str]:
    """The sha256 of every trained stage's weights under a run's folder."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.glob("seed-*/*/stage*/model.safetensors"))
    }


def test_the_same_units_twice_give_identical_weights_and_report(quick_run, tiny_backbones, tmp_path):
    """Reruns on one machine are bit-identical: every stage's weights, every number of the report
    (docs/nano_world.md, "How much one run says", for the spread across machines)."""
    first_out, first = quick_run
    again = run_protocol(_protocol(tmp_path, tiny_backbones))
    weights = _weights(first_out)
    assert set(weights) == {
        f"seed-0/{m}/{s}/model.safetensors" for m in ("baseline", "dpa") for s in ("stage1", "stage2")
    }
    assert _weights(tmp_path) == weights
    assert _numbers(again) == _numbers(first)


def test_train_perceiver_trains_the_perceiver_vlm_on_the_seed_and_dpa_starts_from_it(
    tiny_backbones, tmp_path
):
    """Also from backbones without a perceiver VLM (an earlier version's), which a run that starts
    from the shipped one refuses, naming the way out."""
    older = tmp_path / "older_backbones"
    shutil.copytree(tiny_backbones, older)
    shutil.rmtree(older / "perceiver_vlm")
    manifest = json.loads((older / "manifest.json").read_text())
    del manifest["parts"]["perceiver_vlm"]
    (older / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="--train-perceiver"):
        run_protocol(_protocol(tmp_path / "refused", older))
    report = run_protocol(_protocol(tmp_path / "run", older, train_perceiver=True))
    assert {"seed-0/perceiver-vlm/stage1", "seed-0/perceiver-vlm/stage2"} <= set(report["units"])
    assert not report["shipped_perceiver_vlm"]
    settings = json.loads((tmp_path / "run/seed-0/dpa/stage1/unit.json").read_text())["inputs"]
    assert "perceiver_vlm" in settings  # DPA's stage 1 is keyed on the seed's own perceiver VLM
    assert len(report["units"]) == len(_protocol(tmp_path, None, train_perceiver=True).planned_units())


def test_a_unit_prints_one_line_and_keeps_its_output_in_its_folder(tiny_backbones, tmp_path, capfd):
    run_protocol(_protocol(tmp_path, tiny_backbones, variants=("baseline",)))
    terminal = capfd.readouterr()
    lines = [line for line in terminal.out.splitlines() if line.startswith("[")]
    assert lines and all("elapsed" in line for line in lines), terminal.out
    assert "loss" not in terminal.out and "it/s" not in terminal.err  # the Trainer's logs and bars
    assert "| Model |" in terminal.out and "| claim |" in terminal.out and "report.md" in terminal.out
    assert "'loss'" in (tmp_path / "seed-0/baseline/stage2/unit.log").read_text()


def test_a_changed_input_remakes_what_depends_on_it_and_nothing_else(quick_run, tiny_backbones, tmp_path):
    source, _ = quick_run
    shutil.copytree(source, tmp_path, dirs_exist_ok=True)
    changed = replace(_protocol(tmp_path, tiny_backbones), training_overrides=(*STEPS[1:], "max_steps=3"))
    report = run_protocol(changed)
    remade = {name for name, u in report["units"].items() if not u["reused"]}
    assert {"backbones", "seed-0/data", "seed-0/reference"}.isdisjoint(remade)
    assert {"seed-0/baseline/stage1", "seed-0/dpa/eval", "seed-0/alignment"} <= remade


def test_every_ablation_row_runs_and_gets_its_claim(tiny_backbones, tmp_path):
    report = run_protocol(
        _protocol(tmp_path, tiny_backbones, preset="full", variants=PRESETS["full"]["variants"])
    )
    assert set(report["models"]) == {"perceiver-vlm", *PRESETS["full"]["variants"]}
    claims = {c["claim"] for c in report["claims"]}
    assert len(claims) == 10  # every claim the protocol tests; "frozen: < DPA, > baseline" is two
    assert "ViT only ~ baseline (All Avg)" in claims


def test_backbones_whose_scores_or_tokenizer_differ_are_refused(tiny_backbones, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(tiny_backbones, tampered)
    manifest = json.loads((tampered / "manifest.json").read_text())
    manifest["parts"]["vit"]["scores"]["top1"] += 0.5
    (tampered / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="vit top1"):
        run_protocol(_protocol(tmp_path / "a", tampered))

    other_ids = tmp_path / "other_ids"
    shutil.copytree(tiny_backbones, other_ids)
    vocab_file = other_ids / "tokenizer/tokenizer.json"
    tokenizer = json.loads(vocab_file.read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["red"], vocab["blue"] = vocab["blue"], vocab["red"]
    vocab_file.write_text(json.dumps(tokenizer))
    with pytest.raises(ValueError, match="tokenizer"):
        run_protocol(_protocol(tmp_path / "b", other_ids))


def test_settings_that_cannot_run_are_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown variant"):
        NanoProtocol(out=tmp_path, variants=("baseline", "nope"))
    with pytest.raises(ValueError, match="baseline"):
        NanoProtocol(out=tmp_path, variants=("dpa",))
    with pytest.raises(FileNotFoundError, match=r"stage1\.yaml"):
        NanoProtocol(out=tmp_path, configs=tmp_path)
