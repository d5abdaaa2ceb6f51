"""The nano protocol (`prealign nano run`): the paper's experiment in miniature, as cached units.

Per seed: the nano data; the target LM alone on the text benchmark (the forgetting reference);
the perceiver trained as a small VLM; the baseline and each ablation row through both stages of
`configs/nano`; every model on the nano benchmarks; MIR and layer similarity, baseline vs DPA.
Then, on the first seed, the cost side by side, and the report (`report.py`). Every step
is a unit (`units.py`): kill the run anywhere and the same command continues it.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import AutoTokenizer

from ..training.settings import (
    SHIPPED_CONFIGS,
    ModelSettings,
    TrainSettings,
    apply_overrides,
    from_dict,
    read_yaml,
)
from ..variants import VARIANTS
from .backbones import format_manifest, recheck_backbones, shipped_backbones
from .data import BENCHMARK_GROUPS, NanoDataSpec, build_nano_data
from .pretraining import unigram_entropy
from .units import Units, key_of
from .workers import worker_pool

# The recipe's YAML files (shipped in the package; `configs/nano` of a source checkout); their paths
# name `runs/nano/...`, which the protocol maps into its own folder.
CONFIGS = SHIPPED_CONFIGS / "nano"
CONFIG_ROOT = "runs/nano"
PERCEIVER_VLM = "perceiver-vlm"
PRESETS: dict[str, dict] = {
    "quick": {"variants": ("baseline", "dpa"), "seeds": (0,)},
    "full": {"variants": tuple(VARIANTS), "seeds": (0, 1, 2)},
}


@dataclass(frozen=True)
class NanoProtocol:
    out: Path
    preset: str | None = None  # its name, for the report; the variants and seeds say what runs
    variants: tuple[str, ...] = PRESETS["quick"]["variants"]
    seeds: tuple[int, ...] = PRESETS["quick"]["seeds"]
    backbones: Path | None = None  # a `prealign nano backbones` folder; None: the shipped ones
    data: NanoDataSpec = field(default_factory=NanoDataSpec)
    configs: Path = CONFIGS
    # `key=value` settings applied to every training stage (e.g. `max_steps=2` in tests).
    training_overrides: tuple[str, ...] = ()
    eval_batch_size: int = 100
    max_new_tokens: int = 8  # the longest nano answer is 4 tokens ("above and left" + end)
    alignment_samples: int = 64
    throughput_repeats: int = 5
    throughput_new_tokens: int = 32
    check_tolerance: float = 0.05

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
    def needs_perceiver_vlm(self) -> bool:
        return any(
            VARIANTS[v].uses_perceiver and VARIANTS[v].perceiver_init != "untrained" for v in self.variants
        )

    @property
    def unit_count(self) -> int:
        models = len(self.variants) + self.needs_perceiver_vlm
        per_seed = 2 + 3 * models  # data, reference, (stage 1, stage 2, evaluation) per model
        # MIR and layer similarity on every seed, the cost side by side on the first.
        analyses = ("dpa" in self.variants) * (len(self.seeds) + 1)
        return 1 + per_seed * len(self.seeds) + analyses


def run_protocol(protocol: NanoProtocol) -> dict:
    """Run (or continue) every unit, then write OUT/report.md, OUT/report.json and the plots."""
    from .report import write_report

    start = time.perf_counter()
    out = Path(protocol.out)
    units = Units(out, total=protocol.unit_count)
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
    _print_summary(units, results["wall_s"], out)
    return report


def _backbones_unit(protocol: NanoProtocol, units: Units):
    source = Path(protocol.backbones) if protocol.backbones else shipped_backbones()
    manifest = (source / "manifest.json").read_text()

    def make(folder: Path) -> dict:
        if source.resolve() != folder.resolve():
            shutil.copytree(source, folder, dirs_exist_ok=True)
        checked = recheck_backbones(folder, protocol.check_tolerance)
        print(format_manifest(checked))
        return {"from": str(source), "parts": checked["parts"]}

    return units.run(
        "backbones", {"manifest": key_of({"text": manifest}), "tolerance": protocol.check_tolerance}, make
    )


def _seed_units(protocol: NanoProtocol, units: Units, seed: int, backbones_key: str) -> dict:
    out = Path(protocol.out)
    seed_dir = f"seed-{seed}"
    spec = NanoDataSpec(**{**asdict(protocol.data), "seed": seed})

    def make_data(folder: Path) -> dict:
        build_nano_data(folder, spec)
        _check_same_tokenizer(folder / "tokenizer", out / "backbones" / "tokenizer")
        return {"spec": asdict(spec), "caption_unigram_loss": _caption_unigram_loss(folder)}

    data = units.run(f"{seed_dir}/data", {"spec": asdict(spec), "backbones": backbones_key}, make_data)
    data_dir = out / seed_dir / "data"
    reference = units.run(
        f"{seed_dir}/reference",
        {"data": data.key, "backbones": backbones_key},
        lambda folder: _reference_scores(protocol, out / "backbones", data_dir, folder),
    )
    models: dict[str, dict] = {}
    upstream = {"data": data.key, "backbones": backbones_key}
    names = ([PERCEIVER_VLM] if protocol.needs_perceiver_vlm else []) + list(protocol.variants)
    for name in names:
        keys = dict(upstream)
        if (
            name != PERCEIVER_VLM
            and VARIANTS[name].uses_perceiver
            and VARIANTS[name].perceiver_init != "untrained"
        ):
            keys["perceiver_vlm"] = models[PERCEIVER_VLM]["key"]
        stages = {}
        for stage in ("stage1", "stage2"):
            settings, raw = _stage_settings(protocol, name, stage, seed)
            stages[stage] = units.run(
                f"{seed_dir}/{name}/{stage}",
                {"settings": raw, **keys},
                lambda folder, s=settings: _train(s),
            )
            keys = {**keys, "previous_stage": stages[stage].key}
        evaluation = units.run(
            f"{seed_dir}/{name}/eval",
            {"model": stages["stage2"].key},
            lambda folder, n=name: _evaluate(protocol, out / seed_dir / n / "stage2", data_dir, folder),
        )
        models[name] = {
            "key": stages["stage2"].key,
            "folder": str(out / seed_dir / name / "stage2"),
            "scores": evaluation.result,
            "training": {s: {"wall_s": r.wall_s, **r.result} for s, r in stages.items()},
        }
    return {
        "data": str(data_dir),
        "data_summary": data.result,
        "reference": reference.result,
        "models": models,
    }


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


def _stage_settings(protocol: NanoProtocol, name: str, stage: str, seed: int) -> tuple[TrainSettings, dict]:
    """configs/nano/<name>/<stage>.yaml with its `runs/nano/...` paths in the protocol's folder, the
    seed, and the protocol's overrides; also the raw settings before the paths (the unit's input)."""
    path = protocol.configs / name / f"{stage}.yaml"
    raw = read_yaml(path)
    raw["seed"] = seed
    overridden = apply_overrides(raw, list(protocol.training_overrides))
    out = Path(protocol.out).resolve()
    mapping = {
        f"{CONFIG_ROOT}/backbones": str(out / "backbones"),
        f"{CONFIG_ROOT}/data": str(out / f"seed-{seed}" / "data"),
        f"{CONFIG_ROOT}/": str(out / f"seed-{seed}") + "/",
    }
    settings = from_dict(
        TrainSettings, _map_paths(raw, mapping), where=str(path), from_command_line=overridden
    )
    return settings, raw


def _map_paths(node, mapping: dict[str, str]):
    if isinstance(node, dict):
        return {k: _map_paths(v, mapping) for k, v in node.items()}
    if isinstance(node, list):
        return [_map_paths(v, mapping) for v in node]
    if isinstance(node, str):
        for prefix, target in mapping.items():
            if node.startswith(prefix):
                return target + node[len(prefix) :]
    return node


def _train(settings: TrainSettings) -> dict:
    """One training stage in a fresh process: a long-lived one that has trained before runs the
    next stage ~1.5x slower (its heap grows to gigabytes and a fifth of its time goes to the
    kernel; docs/nano_world.md, "Budgets"), and a stage's memory is released when it ends."""
    with worker_pool(1) as pool:
        return pool.submit(_train_here, settings).result()


def _train_here(settings: TrainSettings) -> dict:
    from ..training.curves import loss_curve
    from ..training.run import train

    trainer = train(settings)
    history = trainer.state.log_history
    losses = loss_curve(history)
    summary = next((row for row in reversed(history) if "train_runtime" in row), {})
    result = {
        "steps": trainer.state.global_step,
        "train_runtime_s": summary.get("train_runtime"),
        "final_loss": losses[-1][1] if losses else summary.get("train_loss"),
        "loss_curve": losses,
    }
    # No teardown: the process ends with the stage, and its daemonic loader worker with it
    # (joining that worker here took 1-5 s per stage).
    return result


def _load(folder: Path):
    from ..modeling import PrealignForConditionalGeneration
    from ..processing import PrealignProcessor

    return PrealignForConditionalGeneration.from_pretrained(str(folder)), PrealignProcessor.from_pretrained(
        str(folder)
    )


def _evaluate(protocol: NanoProtocol, model_folder: Path, data_dir: Path, folder: Path) -> dict:
    from ..evaluation import run_benchmark

    model, processor = _load(model_folder)
    scores = {
        group: run_benchmark(
            model,
            processor,
            data_dir / "bench" / f"{group}.json",
            folder,
            image_root=data_dir / "images",
            batch_size=protocol.eval_batch_size,
            max_new_tokens=protocol.max_new_tokens,
        )
        for group in BENCHMARK_GROUPS
    }
    del model
    gc.collect()
    return scores


def _reference_scores(protocol: NanoProtocol, backbones: Path, data_dir: Path, folder: Path) -> dict:
    """The target LM before any VLM training, on the text benchmark: a baseline assembled from the
    backbones answers text-only prompts with exactly the target LM's logits."""
    from ..evaluation import run_benchmark
    from ..training.run import build_model_and_processor

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
    from ..analysis import (
        AlignmentReport,
        collect_layer_states,
        plot_layer_similarity,
        plot_modality_gaps,
        sample_batches,
    )
    from ..data import DataSource

    def make(folder: Path) -> dict:
        reports = {}
        for name, model_info in models.items():
            model, processor = _load(Path(model_info["folder"]))
            source = DataSource(str(Path(data) / "instruct.json"), str(Path(data) / "images"))
            batches = sample_batches(processor, source, protocol.alignment_samples, batch_size=16)
            reports[name] = AlignmentReport.of(collect_layer_states(model, batches))
            del model
        plot_modality_gaps(reports, folder / "modality_gap.png")
        plot_layer_similarity(reports, folder / "layer_similarity.png")
        return {name: r.to_dict() for name, r in reports.items()}

    inputs = {"models": {n: m["key"] for n, m in models.items()}, "samples": protocol.alignment_samples}
    return units.run(f"seed-{seed}/alignment", inputs, make)


def _cost_unit(protocol: NanoProtocol, units: Units, seed: int, models: dict):
    """Parameters, forward FLOPs of one image + prompt, training wall time and greedy decode
    tokens/s - decode timed by `prealign bench` (analysis/speed.py: models interleaved, medians,
    tokens after the first over the time after the first token)."""
    from ..analysis import forward_flops, one_image_sample, parameter_counts
    from ..analysis.speed import BenchSettings, Contender, run_bench

    def make(folder: Path) -> dict:
        loaded = {name: _load(Path(m["folder"])) for name, m in models.items()}
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


def _print_summary(units: Units, wall_s: float, out: Path) -> None:
    print("\nunit wall times:")
    for name, result in units.done.items():
        print(f"  {name:<36}{result.wall_s:>8.0f} s{' (reused)' if result.reused else ''}")
    print(f"total {wall_s:.0f} s; report: {out / 'report.md'}")
