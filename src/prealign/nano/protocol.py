"""The nano protocol (`prealign nano run`): the paper's experiment in miniature, as cached units.

The backbones - ViT, both LMs and the perceiver VLM (the perceiver LM trained as a small VLM, which
DPA's rows start from, as the authors' DPA-4B-init holds theirs) - come shipped and are measured
again. Per seed: the nano data; the target LM alone on the text benchmark (the forgetting
reference); the baseline and each ablation row through both stages of `configs/nano`; every model
(the perceiver VLM too) on the nano benchmarks; MIR and layer similarity, baseline vs DPA. Then, on
the first seed, the cost side by side, and the report (`report.py`). `train_perceiver` trains the
perceiver VLM on each seed instead. Every step is a unit (`units.py`): kill the run anywhere and
the same command continues it.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from ..analysis import (
    AlignmentReport,
    collect_layer_states,
    forward_flops,
    one_image_sample,
    parameter_counts,
    plot_layer_similarity,
    plot_modality_gaps,
    sample_batches,
)
from ..analysis.alignment import SAMPLES as ALIGNMENT_SAMPLES
from ..analysis.speed import BenchSettings, Contender, run_bench
from ..assembly import ModelSettings, build_model_and_processor, load_saved
from ..data import DataSource
from ..evaluation import run_benchmark
from ..variants import VARIANTS
from .backbones import PERCEIVER_VLM_PART, TOLERANCE, format_manifest, recheck_backbones, shipped_backbones
from .data import NanoDataSpec, build_nano_data
from .pretraining import unigram_entropy
from .report import claims_table, main_table, write_report
from .stages import (
    CONFIGS,
    EVAL_BATCH_SIZE,
    MAX_NEW_TOKENS,
    PERCEIVER_VLM,
    Placement,
    evaluate_vlm,
    stage_settings,
    train_stage,
)
from .units import Units, key_of

# Seconds each unit took on the reference machine (2-core AMD EPYC, quick preset, 2026-12-06):
# the progress line's estimate of the time left scales them by how this machine is doing.
EXPECTED_S = {
    "backbones": 17,
    "data": 6,
    "reference": 2,
    "stage1": 58,
    "stage2": 310,
    "perceiver-vlm/stage1": 22,
    "perceiver-vlm/stage2": 110,
    "eval": 12,
    "alignment": 5,
    "cost": 6,
}
PRESETS: dict[str, dict] = {
    "quick": {"variants": ("baseline", "dpa"), "seeds": (0,)},
    "full": {"variants": tuple(VARIANTS), "seeds": (0, 1, 2)},
}
DEFAULT_PRESET = "quick"  # what `prealign nano run` runs, as the README shows it


@dataclass(frozen=True)
class NanoProtocol:
    out: Path
    preset: str | None = None  # its name, for the report; the variants and seeds say what runs
    variants: tuple[str, ...] = PRESETS[DEFAULT_PRESET]["variants"]
    seeds: tuple[int, ...] = PRESETS[DEFAULT_PRESET]["seeds"]
    backbones: Path | None = None  # a `prealign nano backbones` folder; None: the shipped ones
    data: NanoDataSpec = field(default_factory=NanoDataSpec)
    configs: Path = CONFIGS
    # `key=value` settings applied to every training stage (e.g. `max_steps=2` in tests).
    training_overrides: tuple[str, ...] = ()
    eval_batch_size: int = EVAL_BATCH_SIZE
    max_new_tokens: int = MAX_NEW_TOKENS
    alignment_samples: int = ALIGNMENT_SAMPLES
    throughput_repeats: int = 5
    throughput_new_tokens: int = 32
    check_tolerance: float = TOLERANCE
    train_perceiver: bool = False  # train the perceiver VLM on each seed instead of the shipped one
    verbose: bool = False  # the units' output (Trainer logs, progress bars) on the terminal

    def __post_init__(self):
        unknown = [v for v in self.variants if v not in VARIANTS]
        if unknown:
            raise ValueError(f"unknown variant(s) {unknown}; known: {', '.join(VARIANTS)}")
        if "baseline" not in self.variants:
            raise ValueError("the protocol compares against the baseline: include it in the variants")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not (self.configs / "stage1.yaml").is_file():
            raise FileNotFoundError(
                f"no nano recipe in {self.configs} (stage1.yaml); pass a folder laid out as prealign's "
                f"shipped {CONFIGS}"
            )

    @property
    def trains_perceiver_vlm(self) -> bool:
        return self.train_perceiver and any(
            VARIANTS[v].uses_perceiver and VARIANTS[v].perceiver_init != "untrained" for v in self.variants
        )

    def planned_units(self) -> list[str]:
        """Every unit's kind (an `EXPECTED_S` key), in the order they run."""
        models = [f"{PERCEIVER_VLM}/{stage}" for stage in ("stage1", "stage2") if self.trains_perceiver_vlm]
        per_seed = ["data", "reference", *models, "eval"]  # the perceiver VLM is evaluated either way
        per_seed += ["stage1", "stage2", "eval"] * len(self.variants)
        # MIR and layer similarity on every seed, the cost side by side on the first.
        analyses = ["alignment"] * len(self.seeds) + ["cost"] if "dpa" in self.variants else []
        return ["backbones", *per_seed * len(self.seeds), *analyses]


def run_protocol(protocol: NanoProtocol) -> dict:
    """Run (or continue) every unit, then write OUT/report.md, OUT/report.json and the plots."""
    start = time.perf_counter()
    out = Path(protocol.out)
    planned = protocol.planned_units()
    expected = sum(EXPECTED_S[kind] for kind in planned)
    units = Units(out, total=len(planned), expected_s=expected, verbose=protocol.verbose)
    backbones = _backbones_unit(protocol, units)
    results: dict = {"seeds": {}, "backbones": backbones.result}
    for seed in protocol.seeds:
        results["seeds"][seed] = _seed_units(protocol, units, seed, backbones.key)
    if "dpa" in protocol.variants:
        pairs = {
            seed: {name: results["seeds"][seed]["models"][name] for name in ("baseline", "dpa")}
            for seed in protocol.seeds
        }
        results["alignment"] = {
            seed: _alignment_unit(protocol, units, seed, models, results["seeds"][seed]["data"]).result
            for seed, models in pairs.items()
        }
        first = protocol.seeds[0]
        results["cost"] = _cost_unit(protocol, units, first, pairs[first]).result
    results["units"] = {name: {"wall_s": r.wall_s, "reused": r.reused} for name, r in units.done.items()}
    results["wall_s"] = round(time.perf_counter() - start, 1)
    report = write_report(protocol, results)
    _print_summary(report, out)
    return report


def _backbones_unit(protocol: NanoProtocol, units: Units):
    source = Path(protocol.backbones) if protocol.backbones else shipped_backbones()
    manifest = (source / "manifest.json").read_text()

    def make(folder: Path) -> dict:
        if source.resolve() != folder.resolve():
            shutil.copytree(source, folder, dirs_exist_ok=True)
        checked = recheck_backbones(folder, protocol.check_tolerance, not protocol.train_perceiver)
        print(format_manifest(checked))
        return {"from": str(source), "parts": checked["parts"]}

    return units.run(
        "backbones",
        {"manifest": key_of({"text": manifest}), "tolerance": protocol.check_tolerance},
        make,
        EXPECTED_S["backbones"],
    )


def _seed_units(protocol: NanoProtocol, units: Units, seed: int, backbones_key: str) -> dict:
    out = Path(protocol.out)
    seed_dir = f"seed-{seed}"
    spec = NanoDataSpec(**{**asdict(protocol.data), "seed": seed})

    def make_data(folder: Path) -> dict:
        build_nano_data(folder, spec)
        _check_same_tokenizer(folder / "tokenizer", out / "backbones" / "tokenizer")
        return {"spec": asdict(spec), "caption_unigram_loss": _caption_unigram_loss(folder)}

    data = units.run(
        f"{seed_dir}/data", {"spec": asdict(spec), "backbones": backbones_key}, make_data, EXPECTED_S["data"]
    )
    data_dir = out / seed_dir / "data"
    reference = units.run(
        f"{seed_dir}/reference",
        {"data": data.key, "backbones": backbones_key},
        lambda folder: _reference_scores(protocol, out / "backbones", data_dir, folder),
        EXPECTED_S["reference"],
    )
    shipped_perceiver = None if protocol.train_perceiver else out / "backbones" / PERCEIVER_VLM_PART
    placement = Placement(out / seed_dir, out / "backbones", data_dir, shipped_perceiver)
    models: dict[str, dict] = {}
    upstream = {"data": data.key, "backbones": backbones_key}
    if not protocol.trains_perceiver_vlm:
        models[PERCEIVER_VLM] = _shipped_perceiver_vlm(protocol, units, seed_dir, data_dir, upstream)
    names = ([PERCEIVER_VLM] if protocol.trains_perceiver_vlm else []) + list(protocol.variants)
    for name in names:
        keys = dict(upstream)
        if (
            name != PERCEIVER_VLM
            and protocol.trains_perceiver_vlm
            and VARIANTS[name].uses_perceiver
            and VARIANTS[name].perceiver_init != "untrained"
        ):
            keys["perceiver_vlm"] = models[PERCEIVER_VLM]["key"]
        stages = {}
        for stage in ("stage1", "stage2"):
            settings, raw = stage_settings(
                protocol.configs, name, stage, seed, placement, protocol.training_overrides
            )
            kind = f"{PERCEIVER_VLM}/{stage}" if name == PERCEIVER_VLM else stage
            stages[stage] = units.run(
                f"{seed_dir}/{name}/{stage}",
                {"settings": raw, **keys},
                lambda folder, s=settings: train_stage(s),
                EXPECTED_S[kind],
            )
            keys = {**keys, "previous_stage": stages[stage].key}
        models[name] = {
            "key": stages["stage2"].key,
            "folder": str(out / seed_dir / name / "stage2"),
            "scores": _evaluation_unit(
                protocol,
                units,
                f"{seed_dir}/{name}/eval",
                stages["stage2"].key,
                out / seed_dir / name / "stage2",
                data_dir,
            ),
            "training": {s: {"wall_s": r.wall_s, **r.result} for s, r in stages.items()},
        }
    return {
        "data": str(data_dir),
        "data_summary": data.result,
        "reference": reference.result,
        "models": models,
    }


def _evaluation_unit(protocol: NanoProtocol, units: Units, name: str, key: str, model: Path, data: Path):
    """Unit `name`: the model in folder `model` (unit key `key`) on the benchmarks in `data`."""
    return units.run(
        name,
        {"model": key},
        lambda unit: evaluate_vlm(model, data, unit, protocol.eval_batch_size, protocol.max_new_tokens),
        EXPECTED_S["eval"],
    ).result


def _shipped_perceiver_vlm(
    protocol: NanoProtocol, units: Units, seed_dir: str, data_dir: Path, upstream: dict
) -> dict:
    """The shipped perceiver VLM as a model of the seed: scored on its benchmarks, with the
    training it had (on the validation world) from the manifest."""
    out = Path(protocol.out)
    part = json.loads((out / "backbones" / "manifest.json").read_text())["parts"][PERCEIVER_VLM_PART]
    key = key_of({**upstream, "shipped": PERCEIVER_VLM_PART})
    folder = out / "backbones" / PERCEIVER_VLM_PART
    scores = _evaluation_unit(protocol, units, f"{seed_dir}/{PERCEIVER_VLM}/eval", key, folder, data_dir)
    training = {stage: {"wall_s": None, **part["training"][stage]} for stage in ("stage1", "stage2")}
    return {"key": key, "folder": str(folder), "scores": scores, "training": training, "shipped": True}


def _caption_unigram_loss(data_dir: Path) -> float:
    """Nats per token of the stage-1 captions (and their end-of-turn token) under the captions' own
    unigram frequencies: the level a caption loss that learned nothing from the image reaches."""
    tokenizer = AutoTokenizer.from_pretrained(str(data_dir / "tokenizer"))
    captions = [
        [*tokenizer(turn["value"], add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]
        for record in json.loads((data_dir / "pretrain.json").read_text())
        for turn in record["conversations"][1::2]
    ]
    return unigram_entropy(captions)


def _reference_scores(protocol: NanoProtocol, backbones: Path, data_dir: Path, folder: Path) -> dict:
    """The target LM before any VLM training, on the text benchmark: a baseline assembled from the
    backbones answers text-only prompts with exactly the target LM's logits."""
    model, processor = build_model_and_processor(
        ModelSettings(
            variant="baseline",
            vision=str(backbones / "vit"),
            text=str(backbones / "lm_target"),
            dtype="float32",
        )
    )
    text = run_benchmark(
        model,
        processor,
        data_dir / "bench" / "text.json",
        folder,
        image_root=data_dir / "images",
        batch_size=protocol.eval_batch_size,
        max_new_tokens=protocol.max_new_tokens,
    )
    return {"text": text}


def _alignment_unit(protocol: NanoProtocol, units: Units, seed: int, models: dict, data: str):
    def make(folder: Path) -> dict:
        reports = {}
        for name, model_info in models.items():
            model, processor = load_saved(Path(model_info["folder"]))
            source = DataSource(str(Path(data) / "instruct.json"), str(Path(data) / "images"))
            batches = sample_batches(processor, source, protocol.alignment_samples, batch_size=16)
            reports[name] = AlignmentReport.of(collect_layer_states(model, batches))
            del model
        plot_modality_gaps(reports, folder / "modality_gap.png")
        plot_layer_similarity(reports, folder / "layer_similarity.png")
        return {name: r.to_dict() for name, r in reports.items()}

    inputs = {"models": {n: m["key"] for n, m in models.items()}, "samples": protocol.alignment_samples}
    return units.run(f"seed-{seed}/alignment", inputs, make, EXPECTED_S["alignment"])


def _cost_unit(protocol: NanoProtocol, units: Units, seed: int, models: dict):
    """Parameters, forward FLOPs of one image + prompt, training wall time and greedy decode
    tokens/s - decode timed by `prealign bench` (analysis/speed.py: models interleaved, medians,
    tokens after the first over the time after the first token)."""

    def make(folder: Path) -> dict:
        loaded = {name: load_saved(Path(m["folder"])) for name, m in models.items()}
        cost = {}
        for name, (model, processor) in loaded.items():
            sample = one_image_sample(processor, "describe the scene.")
            cost[name] = {
                "parameters": parameter_counts(model),
                "forward_flops": forward_flops(model, sample),
                "training_s": sum(s["wall_s"] for s in models[name]["training"].values()),
            }
        contenders = [
            Contender(name, model, processor, trains=False) for name, (model, processor) in loaded.items()
        ]
        settings = BenchSettings(
            repeats=protocol.throughput_repeats, new_tokens=protocol.throughput_new_tokens
        )
        for name, timed in run_bench(contenders, settings).models.items():
            cost[name]["decode_tokens_per_s"] = timed["decode_tokens_per_s"]
        return cost

    return units.run(
        f"seed-{seed}/cost",
        {
            "models": {n: m["key"] for n, m in models.items()},
            "repeats": protocol.throughput_repeats,
            "decode_timing": "bench",
        },
        make,
        EXPECTED_S["cost"],
    )


def _check_same_tokenizer(data_tokenizer: Path, backbone_tokenizer: Path) -> None:
    """Backbones trained with other token ids would read the data as noise: refuse, naming both."""
    if (
        AutoTokenizer.from_pretrained(str(data_tokenizer)).get_vocab()
        != AutoTokenizer.from_pretrained(str(backbone_tokenizer)).get_vocab()
    ):
        raise ValueError(
            f"the data's tokenizer ({data_tokenizer}) and the backbones' ({backbone_tokenizer}) differ; "
            "regenerate one of them with this version of prealign"
        )


def _print_summary(report: dict, out: Path) -> None:
    """What the run found, on the terminal's last screen: the main table, the claims, where the
    report is, and how long the run took."""
    print("\n" + "\n".join(main_table(report)))
    print("\n" + "\n".join(claims_table(report)))
    print(f"\nreport: {out / 'report.md'} (plots beside it)")
    made = report["compute_s"] - sum(u["wall_s"] for u in report["units"].values() if u["reused"])
    print(f"wall time {report['wall_s'] / 60:.1f} min ({made / 60:.1f} min of units made in this run)")
