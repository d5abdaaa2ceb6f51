"""One command for the nano world's ingredients: data, tokenizer, ViT, perceiver LM and target LM.

Each finished part is recorded in `manifest.json` (with the command, seed, steps, wall time and
its scores) and reused by the next run, so regenerating is one command and re-running is cheap.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from transformers import AutoTokenizer

from ..data.nano import NanoDataSpec, build_nano_data
from ..training import nano_backbones as nb


@dataclass(frozen=True)
class BackboneBudget:
    """Steps per part; the defaults fit the 60-minute budget of a 2-core CPU."""

    vit_steps: int = 600
    perceiver_steps: int = 2000
    target_steps: int = 2000
    perceiver_size: str = "perceiver"
    target_size: str = "target"
    vit_hidden: int = 128
    vit_layers: int = 4
    vit_batch: int = 128
    lm_batch: int = 64
    eval_per_kind: int = 60


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
    eval_per_kind=8,
)


def build_backbones(
    out: str | Path,
    seed: int = 0,
    budget: BackboneBudget = BackboneBudget(),
    data_spec: NanoDataSpec | None = None,
) -> dict:
    out = Path(out)
    manifest_path = out / "manifest.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
    if manifest.get("seed", seed) != seed or manifest.get("budget", asdict(budget)) != asdict(budget):
        raise ValueError(f"{out} holds backbones made with other settings; use another folder.")
    manifest.update(
        {"command": " ".join(["prealign", *sys.argv[1:]]), "seed": seed, "budget": asdict(budget)}
    )
    parts = manifest.setdefault("parts", {})

    def run(name: str, make) -> None:
        if name in parts:
            print(f"{name}: reused ({parts[name]['wall_time_s']:.0f} s when made)")
            return
        start = time.perf_counter()
        scores = make()
        parts[name] = {"wall_time_s": round(time.perf_counter() - start, 1), "scores": scores}
        manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        print(f"{name}: {parts[name]['wall_time_s']:.0f} s")

    out.mkdir(parents=True, exist_ok=True)
    run("data", lambda: _data(out, data_spec or NanoDataSpec(seed=seed)))
    tokenizer = AutoTokenizer.from_pretrained(str(out / "data" / "tokenizer"))
    run("vit", lambda: _vit(out / "vit", tokenizer, seed, budget))
    for name, size, steps in (
        ("lm_perceiver", budget.perceiver_size, budget.perceiver_steps),
        ("lm_target", budget.target_size, budget.target_steps),
    ):
        run(
            name,
            lambda name=name, size=size, steps=steps: _lm(out / name, tokenizer, seed, budget, size, steps),
        )
    manifest["total_wall_time_s"] = round(sum(p["wall_time_s"] for p in parts.values()), 1)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return manifest


def _data(out: Path, spec: NanoDataSpec) -> dict:
    build_nano_data(out / "data", spec)
    return {"spec": asdict(spec)}


def _vit(folder: Path, tokenizer, seed: int, budget: BackboneBudget) -> dict:
    model = nb.pretrain_vit(
        tokenizer,
        folder,
        steps=budget.vit_steps,
        batch=budget.vit_batch,
        seed=seed,
        hidden=budget.vit_hidden,
        layers=budget.vit_layers,
    )
    return nb.evaluate_retrieval(model, nb.retrieval_pairs(tokenizer))


def _lm(folder: Path, tokenizer, seed: int, budget: BackboneBudget, size: str, steps: int) -> dict:
    model = nb.pretrain_lm(tokenizer, folder, size=size, steps=steps, batch=budget.lm_batch, seed=seed)
    items = nb.lm_eval_items(n_per_kind=budget.eval_per_kind)
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        **nb.evaluate_lm(model, tokenizer, items),
    }


def format_manifest(manifest: dict) -> str:
    lines = [f"made by: {manifest['command']} (seed {manifest['seed']})"]
    vit = manifest["parts"]["vit"]["scores"]
    lines.append(f"ViT image->caption top-1 {vit['top1']:.2f} (chance {vit['chance']:.2f})")
    perceiver, target = manifest["parts"]["lm_perceiver"]["scores"], manifest["parts"]["lm_target"]["scores"]
    lines.append(f"{'question type':<24}{'perceiver LM':>13}{'target LM':>11}{'majority':>10}")
    for kind in sorted(k for k in perceiver if k != "parameters"):
        lines.append(
            f"{kind:<24}{perceiver[kind]['accuracy']:>13.2f}{target[kind]['accuracy']:>11.2f}"
            f"{perceiver[kind]['majority']:>10.2f}"
        )
    lines.append(f"parameters: perceiver LM {perceiver['parameters']:,}, target LM {target['parameters']:,}")
    lines.append(f"total wall time {manifest['total_wall_time_s']:.0f} s")
    return "\n".join(lines)
