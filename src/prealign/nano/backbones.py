"""One command for the nano world's backbones: tokenizer, ViT, perceiver LM, target LM and the
perceiver VLM that DPA's rows start from.

The folder it writes is exactly what the package ships under `prealign/assets/nano`: bf16
safetensors, the tokenizer, and `manifest.json` with the command, seed, budget, wall times and
the scores measured on the saved (bf16) weights. Each finished part is recorded in the
manifest and reused by the next run; an interrupted part resumes from its Trainer checkpoint.
"""

from __future__ import annotations

import json
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import transformers
from transformers import AutoTokenizer, Qwen3ForCausalLM, SiglipModel

from ..assembly import load_saved
from . import pretraining as nb
from .data import NanoDataSpec, build_nano_data
from .stages import CONFIGS, PERCEIVER_VLM, Placement, evaluate_vlm, stage_settings, train_stage
from .tokenizer import nano_tokenizer
from .workers import worker_pool

SHIPPED_BACKBONES = Path(__file__).resolve().parent.parent / "assets" / "nano"
PRETRAINED_PARTS = ("vit", "lm_perceiver", "lm_target")  # made from the world's text and images alone
PERCEIVER_VLM_PART = "perceiver_vlm"  # made from two of them through the VLM recipe
BACKBONES = (*PRETRAINED_PARTS, PERCEIVER_VLM_PART)
# The rule that picks the shipped perceiver VLM among its candidates, fixed before they were
# trained: the highest Perception on the validation world (the group that says whether the small
# VLM reads the image; docs/nano_world.md, "How much one seed says"), ties to the lower seed.
PERCEIVER_VLM_RULE = "highest Perception on the validation world; ties to the lower training seed"


@dataclass(frozen=True)
class BackboneBudget:
    """Steps per part; the defaults fit the 60-minute budget of a 2-core CPU (docs/nano_world.md)."""

    vit_steps: int = 600
    # Both LMs see 32 conversations per step. The perceiver learns the scene lookups between 2,000
    # and 6,000 steps; per example the larger target learns them no faster, so it gets more
    # examples than the perceiver, as many as its core has time for. See docs/nano_world.md.
    perceiver_steps: int = 6000
    target_steps: int = 6500
    perceiver_size: str = "perceiver"
    target_size: str = "target"
    # Lower rates for the wider target: at 2e-3 a 256-d target stalled (colour lookup at chance)
    # where the perceiver learned every lookup.
    perceiver_lr: float = 2e-3
    target_lr: float = 1.5e-3
    vit_hidden: int = 128
    vit_layers: int = 4
    vit_batch: int = 128
    lm_batch: int = 32  # more, smaller steps learned more than 2000 x 64 in the same time
    # Each batch's examples packed into rows of this many tokens: the padded batch's loss, 1.3-1.6x
    # faster per step (`benchmarks/nano_lm_padding.py`); None pads them.
    lm_row_length: int | None = 128
    eval_per_kind: int = 100
    # The perceiver VLM: configs/nano/perceiver-vlm's two stages on the validation world (never a
    # reported one), once per training seed; `PERCEIVER_VLM_RULE` picks the one that ships.
    perceiver_vlm_seeds: tuple[int, ...] = (0, 1)
    validation_world: int = 100
    perceiver_vlm_data: dict = field(default_factory=dict)  # NanoDataSpec sizes other than its own
    perceiver_vlm_overrides: tuple[str, ...] = ()  # settings for both stages (tiny runs)


TINY_BUDGET = BackboneBudget(
    vit_steps=20,
    perceiver_steps=30,
    target_steps=30,
    perceiver_size="tiny",
    target_size="tiny",
    vit_hidden=64,
    vit_layers=2,
    vit_batch=16,
    lm_batch=16,
    lm_row_length=128,
    eval_per_kind=8,
    perceiver_vlm_data={"pretrain": 8, "instruct": 8, "corpus": 4, "benchmark": 3},
    perceiver_vlm_overrides=("max_steps=2", "global_batch_size=2", "per_device_batch_size=2"),
)


def budget_record(budget: BackboneBudget) -> dict:
    """The budget as a manifest holds it (JSON: tuples as lists)."""
    return json.loads(json.dumps(asdict(budget)))


def shipped_backbones() -> Path:
    """The backbones that come with the package (what `prealign nano run` starts from)."""
    if not (SHIPPED_BACKBONES / "manifest.json").is_file():
        raise FileNotFoundError(
            f"no shipped nano backbones in {SHIPPED_BACKBONES}; make them with "
            "`prealign nano backbones DIR` and pass DIR instead"
        )
    return SHIPPED_BACKBONES


def build_backbones(
    out: str | Path, seed: int = 0, budget: BackboneBudget | None = None, jobs: int = 1
) -> dict:
    """Make every missing part into `out` and record it in the manifest; `jobs` parts at a time,
    each in its own process with an equal share of the CPU threads. Whether that is faster depends
    on the machine: on 2 cores the parts run at about 0.6x their two-thread speed each, so two at a
    time gain little (docs/nano_world.md, "Budgets")."""
    budget = budget or BackboneBudget()
    out = Path(out)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    recorded = {**budget_record(budget), **manifest.get("budget", {})}  # a new field: its default
    if manifest.get("seed", seed) != seed or recorded != budget_record(budget):
        raise ValueError(f"{out} holds backbones made with other settings; use another folder.")
    threads = max(1, torch.get_num_threads() // jobs)
    manifest.update(
        {
            "command": " ".join(["prealign", *sys.argv[1:]]),
            "seed": seed,
            "budget": budget_record(budget),
            "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {jobs} part(s) at a time",
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        }
    )
    parts = manifest.setdefault("parts", {})
    out.mkdir(parents=True, exist_ok=True)
    nano_tokenizer().save_pretrained(out / "tokenizer")
    todo = [name for name in LONGEST_FIRST if name not in parts and name in PRETRAINED_PARTS]
    for name in BACKBONES:
        if name in parts:
            print(f"{name}: reused ({parts[name]['wall_time_s']:.0f} s when made)")
    # Parts made at the same time overlap: the command's own wall time (summed over the runs that
    # made the folder) is what the budget measures.
    start = time.perf_counter() - manifest.get("elapsed_s", 0.0)
    if jobs == 1:
        finished = ((name, _make_part(name, out, seed, budget, threads)) for name in todo)
        for name, part in finished:
            _record(manifest, manifest_path, name, part, time.perf_counter() - start)
    else:
        with worker_pool(jobs) as pool:
            futures = {pool.submit(_make_part, name, out, seed, budget, threads): name for name in todo}
            for future in as_completed(futures):
                _record(
                    manifest, manifest_path, futures[future], future.result(), time.perf_counter() - start
                )
    if PERCEIVER_VLM_PART not in parts:  # reads the ViT and the perceiver LM: after them, all threads
        part = {"threads": torch.get_num_threads(), **_timed(lambda: _perceiver_vlm(out, budget))}
        _record(manifest, manifest_path, PERCEIVER_VLM_PART, part, time.perf_counter() - start)
    _write_manifest(manifest, manifest_path)
    return manifest


# The order parts are started in when several run at a time: the longest first.
LONGEST_FIRST = ("lm_target", "lm_perceiver", "vit")


def _make_part(name: str, out: Path, seed: int, budget: BackboneBudget, threads: int) -> dict:
    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    if name == "vit":
        return {"threads": threads, **_timed(lambda: {"scores": _vit(out / "vit", tokenizer, seed, budget)})}
    size = budget.perceiver_size if name == "lm_perceiver" else budget.target_size
    return {"threads": threads, **_timed(lambda: {"scores": _lm(out / name, tokenizer, seed, budget, size)})}


def _timed(make) -> dict:
    start = time.perf_counter()
    part = make()
    return {"wall_time_s": round(time.perf_counter() - start, 1), **part}


def _perceiver_vlm(out: Path, budget: BackboneBudget) -> dict:
    """The perceiver LM read as a small VLM (configs/nano/perceiver-vlm, both stages) on the
    validation world, once per training seed; the candidate `PERCEIVER_VLM_RULE` picks ships in
    bf16, scored again as saved. Its work folder is removed when the part is recorded."""
    work = out / f"{PERCEIVER_VLM_PART}.work"
    data = validation_world(budget, work / "data")
    candidates = {}
    for training_seed in budget.perceiver_vlm_seeds:
        placement = Placement(root=work / f"seed-{training_seed}", backbones=out, data=data)
        training = {}
        for stage in ("stage1", "stage2"):
            settings, _ = stage_settings(
                CONFIGS, PERCEIVER_VLM, stage, training_seed, placement, budget.perceiver_vlm_overrides
            )
            training[stage] = train_stage(settings)
        trained = placement.root / PERCEIVER_VLM / "stage2"
        scores = evaluate_vlm(trained, data, placement.root / "eval")
        candidates[training_seed] = {"folder": trained, "scores": scores, "training": training}
        perception = scores["perception"]["accuracy"]
        print(f"perceiver VLM, training seed {training_seed}: Perception {perception:.3f}", flush=True)
    chosen = max(candidates, key=lambda s: (candidates[s]["scores"]["perception"]["accuracy"], -s))
    model, processor = load_saved(candidates[chosen]["folder"])
    _finish(model, out / PERCEIVER_VLM_PART)
    processor.save_pretrained(out / PERCEIVER_VLM_PART)
    scores = evaluate_vlm(out / PERCEIVER_VLM_PART, data, work / "shipped")
    shutil.rmtree(work)
    return {
        "scores": vlm_scores(scores),
        "chosen_seed": chosen,
        "rule": PERCEIVER_VLM_RULE,
        "candidates": {s: vlm_scores(c["scores"]) for s, c in candidates.items()},
        "training": candidates[chosen]["training"],
    }


def validation_world(budget: BackboneBudget, folder: Path) -> Path:
    """The world the perceiver VLM is chosen and re-checked on (never one the protocol reports)."""
    build_nano_data(folder, NanoDataSpec(**{**budget.perceiver_vlm_data, "seed": budget.validation_world}))
    return folder


def vlm_scores(scores: dict) -> dict:
    """A VLM's benchmark scores as a manifest records them: each group's accuracy and its kinds'."""
    return {
        group: {"accuracy": r["accuracy"], "kinds": {k: v["accuracy"] for k, v in r.get("kinds", {}).items()}}
        for group, r in scores.items()
    }


def _record(manifest: dict, path: Path, name: str, part: dict, elapsed: float) -> None:
    manifest["parts"][name] = part
    manifest["elapsed_s"] = round(elapsed, 1)
    _write_manifest(manifest, path)
    print(f"{name}: {part['wall_time_s']:.0f} s ({elapsed:.0f} s since the start)", flush=True)


def _write_manifest(manifest: dict, path: Path) -> None:
    parts = manifest["parts"].values()
    manifest["total_wall_time_s"] = round(sum(p["wall_time_s"] for p in parts), 1)
    path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def _finish(model, folder: Path) -> None:
    """Keep the bf16 weights only: half the bytes, and the scores are measured on them."""
    model.to(torch.bfloat16).save_pretrained(folder)
    for checkpoint in folder.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)


def pretrain_vit_part(
    tokenizer, folder: Path, seed: int, budget: BackboneBudget, steps: int | None = None
) -> SiglipModel:
    """The nano ViT as the budget says (`steps` overrides its step count)."""
    return nb.pretrain_vit(
        tokenizer,
        folder,
        steps=steps or budget.vit_steps,
        batch=budget.vit_batch,
        seed=seed,
        hidden=budget.vit_hidden,
        layers=budget.vit_layers,
    )


def pretrain_lm_part(
    tokenizer,
    folder: Path,
    seed: int,
    budget: BackboneBudget,
    size: str,
    steps: int | None = None,
    lr: float | None = None,
) -> Qwen3ForCausalLM:
    """One nano LM as the budget says: the target's schedule for the target size, else the
    perceiver's (`steps` and `lr` override them)."""
    is_target = size == budget.target_size
    return nb.pretrain_lm(
        tokenizer,
        folder,
        size=size,
        steps=steps or (budget.target_steps if is_target else budget.perceiver_steps),
        batch=budget.lm_batch,
        lr=lr or (budget.target_lr if is_target else budget.perceiver_lr),
        seed=seed,
        row_length=budget.lm_row_length,
    )


def _vit(folder: Path, tokenizer, seed: int, budget: BackboneBudget) -> dict:
    _finish(pretrain_vit_part(tokenizer, folder, seed, budget), folder)
    return evaluate_vit(folder)


def _lm(folder: Path, tokenizer, seed: int, budget: BackboneBudget, size: str) -> dict:
    _finish(pretrain_lm_part(tokenizer, folder, seed, budget, size), folder)
    return evaluate_language_model(folder, budget.eval_per_kind)


def evaluate_vit(folder: str | Path) -> dict:
    """Image -> caption retrieval of a saved nano ViT on the held-out pairs."""
    model = SiglipModel.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    image_size = model.config.vision_config.image_size
    return {
        "parameters": sum(p.numel() for p in model.vision_model.parameters()),
        **nb.evaluate_retrieval(model, nb.retrieval_pairs(tokenizer, image_size=image_size)),
    }


def evaluate_language_model(folder: str | Path, eval_per_kind: int) -> dict:
    """Held-out text questions per type of a saved nano LM, against the majority answer."""
    model = Qwen3ForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    descriptions = nb.description_items(eval_per_kind)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        **nb.evaluate_lm(model, tokenizer, nb.lm_eval_items(n_per_kind=eval_per_kind)),
        # Nats per reply token of a scene's description (the stage-1 caption): what stage 1 aligns
        # images to, against a model that ignores the scene (the replies' own unigram entropy).
        "description_loss": nb.answer_loss(model, tokenizer, descriptions),
        "description_unigram_loss": nb.unigram_loss(tokenizer, descriptions),
    }


def format_lm_scores(scores: dict) -> str:
    """One LM's held-out accuracy per question type, in all scenes and in busy ones."""
    busy_header = f"{nb.BUSY_SCENE}+ objects:{'accuracy':>9}{'majority':>9}"
    lines = [f"{'question type':<26}{'accuracy':>9}{'majority':>9}   {busy_header}"]
    for kind, r in sorted((k, r) for k, r in scores.items() if isinstance(r, dict)):
        busy = f"{r['busy']['accuracy']:>22.2f}{r['busy']['majority']:>9.2f}" if "busy" in r else ""
        lines.append(f"{kind:<26}{r['accuracy']:>9.2f}{r['majority']:>9.2f}{busy}")
    return "\n".join(lines)


def format_manifest(manifest: dict) -> str:
    lines = [f"made by: {manifest['command']} (seed {manifest['seed']}, {manifest.get('machine', '?')})"]
    vit = manifest["parts"]["vit"]["scores"]
    lines.append(
        f"ViT ({vit['parameters']:,} params): image->caption top-1 {vit['top1']:.2f} "
        f"(chance {vit['chance']:.2f})"
    )
    perceiver, target = manifest["parts"]["lm_perceiver"]["scores"], manifest["parts"]["lm_target"]["scores"]
    lines.append(f"{'':<24}{'all scenes':^35}{f'scenes of {nb.BUSY_SCENE}+ objects':^35}".rstrip())
    header = f"{'perceiver LM':>13}{'target LM':>11}{'majority':>10} "
    lines.append(f"{'question type':<24}{header}{header}".rstrip())
    for kind in sorted(k for k, v in perceiver.items() if isinstance(v, dict)):
        row = f"{kind:<24}"
        small, large = perceiver[kind], target[kind]
        for p, t in ((small, large), (small.get("busy"), large.get("busy"))):
            row += f"{p['accuracy']:>13.2f}{t['accuracy']:>11.2f}{p['majority']:>10.2f} " if p else ""
        lines.append(row.rstrip())
    lines.append(f"parameters: perceiver LM {perceiver['parameters']:,}, target LM {target['parameters']:,}")
    if "description_loss" in perceiver:
        lines.append(
            f"description loss (nats/token): perceiver LM {perceiver['description_loss']:.3f}, target LM "
            f"{target['description_loss']:.3f}; ignoring the scene (unigram) "
            f"{target['description_unigram_loss']:.3f}"
        )
    if vlm := manifest["parts"].get(PERCEIVER_VLM_PART):
        groups = ", ".join(f"{g} {100 * r['accuracy']:.1f}" for g, r in vlm["scores"].items())
        lines.append(f"perceiver VLM (training seed {vlm['chosen_seed']}, validation world): {groups}")
    made = [name for name in BACKBONES if name in manifest["parts"]]
    times = ", ".join(f"{name} {manifest['parts'][name]['wall_time_s']:.0f} s" for name in made)
    elapsed = manifest.get("elapsed_s", manifest["total_wall_time_s"])
    lines.append(
        f"wall time: {times}; {manifest['total_wall_time_s']:.0f} s of work in {elapsed:.0f} s elapsed"
    )
    return "\n".join(lines)


# How far a re-checked score may drift from its manifest: greedy answers can flip on near-ties
# between CPU kernels (another machine, another thread count).
TOLERANCE = 0.05


def recheck_backbones(folder: str | Path, tolerance: float = TOLERANCE, perceiver_vlm: bool = True) -> dict:
    """Measure every part of a backbone folder again; fail if a score drifted from its manifest.
    `perceiver_vlm=False`: a folder without the perceiver VLM will do (a run that trains its own).
    """
    folder = Path(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    has_perceiver_vlm = PERCEIVER_VLM_PART in manifest["parts"]
    if perceiver_vlm and not has_perceiver_vlm:
        raise ValueError(
            f"{folder} has no perceiver VLM (made by this version of `prealign nano backbones`): run "
            f"`prealign nano backbones {folder}` to add it to the parts there, or train it per seed "
            "with `prealign nano run --train-perceiver`"
        )
    budget = manifest["budget"]
    fresh = {
        "vit": evaluate_vit(folder / "vit"),
        "lm_perceiver": evaluate_language_model(folder / "lm_perceiver", budget["eval_per_kind"]),
        "lm_target": evaluate_language_model(folder / "lm_target", budget["eval_per_kind"]),
    }
    if has_perceiver_vlm:
        with tempfile.TemporaryDirectory() as work:
            world = BackboneBudget(**{**asdict(BackboneBudget()), **budget})
            data = validation_world(world, Path(work) / "data")
            scores = evaluate_vlm(folder / PERCEIVER_VLM_PART, data, Path(work))
            fresh[PERCEIVER_VLM_PART] = vlm_scores(scores)
    drifts = []
    for part, scores in fresh.items():
        recorded = manifest["parts"][part]["scores"]
        pairs = [("top1", scores["top1"], recorded["top1"])] if part == "vit" else []
        for kind, s in scores.items():
            if isinstance(s, dict):
                pairs.append((kind, s["accuracy"], recorded[kind]["accuracy"]))
                if "busy" in s:
                    then = recorded[kind]["busy"]["accuracy"]
                    pairs.append((f"{kind} (busy scenes)", s["busy"]["accuracy"], then))
        drifts += [
            f"{part} {name}: {now:.3f} now, {then:.3f} in the manifest"
            for name, now, then in pairs
            if abs(now - then) > tolerance
        ]
    if drifts:
        raise ValueError(
            f"{folder}: scores differ from manifest.json by more than {tolerance}:\n" + "\n".join(drifts)
        )
    return {**manifest, "parts": {p: {**manifest["parts"][p], "scores": s} for p, s in fresh.items()}}
