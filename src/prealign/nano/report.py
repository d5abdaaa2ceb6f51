"""The nano protocol's report: tables in the shape of the paper's, the claims table, the plots.

`report.json` (schema below) is the source; `report.md` and the README's nano section are
rendered from it.

    {"preset": str | null, "seeds": [int], "variants": [str],
     "wall_s": float,      # this invocation (a resumed run reuses what an earlier one made)
     "compute_s": float,   # every unit's wall time when it was made: what the whole run cost
     "models": {name: {"seeds": {seed: ROW}, "mean": ROW, "std": ROW, "delta_vs_baseline": ROW,
                       "forgetting": {"mean": float, "std": float},
                       "kinds": {kind: {"accuracy": float, "majority": float}}}},   # mean over seeds
     "reference_text": {"mean": float, "std": float},   # the target LM before VLM training
     "stage1_caption_loss": {name: {"mean", "std"}},     # nats/token, the last logged stage-1 loss
     "caption_unigram_loss": {"mean", "std"},            # what a caption loss blind to the image reaches
     "forgetting_reduction": float | null,               # 1 - forgetting(dpa) / forgetting(baseline)
     "alignment": {name: {"mir": {"mean", "std"},                     # over seeds
                          "modality_gap_per_layer": [float]}} | null,  # the first seed's
     "cost": {"parameters": {name: int}, "forward_flops": {name: int}, "training_s": {name: float},
              "decode_tokens_per_s": {name: float}, "ratios": {...}} | null,
     "claims": [{"claim", "paper", "ours", "spread", "seeds", "verdict"}],
     "units": {name: {"wall_s": float, "reused": bool}}}

    ROW = {"general", "reasoning", "perception", "text", "multi_avg", "all_avg"}: accuracy in [0, 1]
"""

from __future__ import annotations

import json
import shutil
import statistics
from pathlib import Path

from ..evaluation.report import plot_report
from ..training.curves import draw_loss_curves
from .data import BENCHMARK_GROUPS

MULTIMODAL = ("general", "reasoning", "perception")
COLUMNS = (*BENCHMARK_GROUPS, "multi_avg", "all_avg")
HEADERS = ("General", "Reasoning", "Perception", "Text", "Multi Avg", "All Avg")
PERCEIVER_VLM = "perceiver-vlm"

# The paper's numbers (Qwen3-4B, Table 1 and the ablation table; accuracy in points) for each claim.
PAPER_4B = {
    "baseline": {"multi_avg": 51.2, "all_avg": 49.6, "text": 45.1},
    "dpa": {"multi_avg": 53.1, "all_avg": 53.0, "text": 52.6},
    "large_mlp": {"all_avg": 34.1},
    "vit_only": {"all_avg": 50.3},
    "random_lm": {"all_avg": 38.7},
    "dpa_early_fusion": {"all_avg": 55.2},
    "dpa_frozen_perceiver": {"all_avg": 52.1},
    "dpa_untrained_perceiver": {"all_avg": 53.1},
}
# Rough equality ("ViT only ~ baseline"): a difference and a spread both within this count as equal.
EQUAL_WITHIN = 0.02
RULE = (
    "For each claim, d is the mean over seeds of the per-seed difference named in the claim and s "
    "its sample standard deviation over seeds (0 with one seed). A directional claim **agrees** when d "
    "has the paper's sign and |d| > s, **disagrees** when d has the opposite sign and |d| > s, and is "
    f"**inconclusive** otherwise. A claim of rough equality agrees when |d| and s are both at most "
    f"{EQUAL_WITHIN * 100:g} points, disagrees when |d| > max(s, {EQUAL_WITHIN * 100:g} points), and is "
    "inconclusive otherwise: seeds that spread wider than the tolerance cannot show two models equal. "
    "With one seed there is no spread: the verdict rests on the sign alone and says so. The rule was "
    "fixed before any result was seen; its equality case was tightened after the first three-seed "
    "report, where it read a 9.4-point spread as agreement (the change can only turn an agreement into "
    "inconclusive)."
)


def _row(scores: dict) -> dict[str, float]:
    row = {group: scores[group]["accuracy"] for group in BENCHMARK_GROUPS}
    row["multi_avg"] = statistics.mean(row[g] for g in MULTIMODAL)
    row["all_avg"] = statistics.mean(row[g] for g in BENCHMARK_GROUPS)
    return row


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def build_report(protocol, results: dict) -> dict:
    seeds = list(results["seeds"])
    names = [n for n in (PERCEIVER_VLM, *protocol.variants) if n in results["seeds"][seeds[0]]["models"]]
    reference = [results["seeds"][s]["reference"]["text"]["accuracy"] for s in seeds]
    models = {}
    for name in names:
        per_seed = {s: _row(results["seeds"][s]["models"][name]["scores"]) for s in seeds}
        base = {s: _row(results["seeds"][s]["models"]["baseline"]["scores"]) for s in seeds}
        stats = {c: _mean_std([per_seed[s][c] for s in seeds]) for c in COLUMNS}
        forgetting = _mean_std([ref - per_seed[s]["text"] for s, ref in zip(seeds, reference, strict=True)])
        models[name] = {
            "seeds": per_seed,
            "mean": {c: m for c, (m, _) in stats.items()},
            "std": {c: sd for c, (_, sd) in stats.items()},
            "delta_vs_baseline": {
                c: statistics.mean(per_seed[s][c] - base[s][c] for s in seeds) for c in COLUMNS
            },
            "forgetting": {"mean": forgetting[0], "std": forgetting[1]},
            "kinds": _kinds(results, seeds, name),
        }
    reduction = None
    if "dpa" in models and models["baseline"]["forgetting"]["mean"] > 0:
        reduction = 1 - models["dpa"]["forgetting"]["mean"] / models["baseline"]["forgetting"]["mean"]
    ref_mean, ref_std = _mean_std(reference)
    stage1 = {
        name: _mean_std(
            [results["seeds"][s]["models"][name]["training"]["stage1"]["final_loss"] for s in seeds]
        )
        for name in names
    }
    unigram = _mean_std([results["seeds"][s]["data_summary"]["caption_unigram_loss"] for s in seeds])
    report = {
        "preset": protocol.preset,
        "seeds": seeds,
        "variants": list(protocol.variants),
        "wall_s": results["wall_s"],
        "compute_s": round(sum(u["wall_s"] for u in results["units"].values()), 1),
        "models": models,
        "reference_text": {"mean": ref_mean, "std": ref_std},
        "stage1_caption_loss": {n: {"mean": m, "std": sd} for n, (m, sd) in stage1.items()},
        "caption_unigram_loss": {"mean": unigram[0], "std": unigram[1]},
        "forgetting_reduction": reduction,
        "shipped_perceiver_vlm": bool(
            results["seeds"][seeds[0]]["models"].get(PERCEIVER_VLM, {}).get("shipped")
        ),
        "alignment": _alignment(results.get("alignment"), seeds),
        "cost": _cost(results.get("cost")),
        "units": results["units"],
    }
    report["claims"] = claims(results, report)
    return report


def _kinds(results: dict, seeds: list, name: str) -> dict[str, dict[str, float]]:
    """Accuracy per question kind of the image benchmarks, mean over seeds, with the majority answer."""
    kinds: dict[str, dict[str, list[float]]] = {}
    for s in seeds:
        for group in MULTIMODAL:
            for kind, r in results["seeds"][s]["models"][name]["scores"][group]["kinds"].items():
                entry = kinds.setdefault(kind, {"accuracy": [], "majority": []})
                entry["accuracy"].append(r["accuracy"])
                entry["majority"].append(r["majority"])
    return {k: {m: statistics.mean(v) for m, v in e.items()} for k, e in sorted(kinds.items())}


def _alignment(alignment: dict | None, seeds: list) -> dict | None:
    """MIR per model over the seeds; the per-layer gap (as plotted) of the first seed."""
    if not alignment:
        return None
    out = {}
    for name, first in alignment[seeds[0]].items():
        mean, std = _mean_std([alignment[s][name]["mir"] for s in seeds])
        out[name] = {
            "mir": {"mean": mean, "std": std},
            "modality_gap_per_layer": first["modality_gap_per_layer"],
        }
    return out


def _cost(cost: dict | None) -> dict | None:
    if not cost:
        return None
    out = {
        "parameters": {n: sum(c["parameters"].values()) for n, c in cost.items()},
        "forward_flops": {n: c["forward_flops"]["total"] for n, c in cost.items()},
        "training_s": {n: c["training_s"] for n, c in cost.items()},
        "decode_tokens_per_s": {n: c["decode_tokens_per_s"] for n, c in cost.items()},
    }
    out["ratios"] = {
        key: out[key]["dpa"] / out[key]["baseline"] for key in ("parameters", "forward_flops", "training_s")
    } | {"decode_tokens_per_s": out["decode_tokens_per_s"]["dpa"] / out["decode_tokens_per_s"]["baseline"]}
    return out


def claim_verdict(d: float, s: float, sign: int) -> str:
    """RULE for one claim: `d` the mean per-seed difference, `s` its spread over seeds, `sign` the
    paper's direction (+1 / -1) or 0 for rough equality."""
    if sign == 0:
        if abs(d) <= EQUAL_WITHIN and s <= EQUAL_WITHIN:
            return "agrees"
        return "disagrees" if abs(d) > max(s, EQUAL_WITHIN) else "inconclusive"
    if abs(d) <= s:
        return "inconclusive"
    return "agrees" if d * sign > 0 else "disagrees"


def claims(results: dict, report: dict) -> list[dict]:
    """Each of the paper's directional claims whose models ran, with its verdict by RULE."""
    seeds = report["seeds"]
    models = report["models"]
    paper = PAPER_4B
    rows = []

    def add(
        claim: str, paper_d: float | None, per_seed: list[float], sign: int, unit: str = "accuracy"
    ) -> None:
        d, s = _mean_std(per_seed)
        verdict = claim_verdict(d, s, sign)
        if len(per_seed) == 1:
            verdict += " (one seed: sign only)"
        rows.append(
            {
                "claim": claim,
                "unit": unit,
                "paper": paper_d,
                "ours": d,
                "spread": s,
                "seeds": len(per_seed),
                "verdict": verdict,
            }
        )

    def diff(a: str, b: str, column: str) -> list[float]:
        return [models[a]["seeds"][x][column] - models[b]["seeds"][x][column] for x in seeds]

    def points(a: str, b: str, column: str) -> float:
        return round((paper[a][column] - paper[b][column]) / 100, 3)

    if "dpa" in models:
        add(
            "DPA > baseline on Multi Avg",
            points("dpa", "baseline", "multi_avg"),
            diff("dpa", "baseline", "multi_avg"),
            +1,
        )
        # Both start from the same target LM, so less forgetting is a higher Text score.
        add(
            "DPA forgets less text (Text: DPA > baseline)",
            points("dpa", "baseline", "text"),
            diff("dpa", "baseline", "text"),
            +1,
        )
    directional = (
        ("random_lm", "baseline", "random-init perceiver LM blocks collapse (< baseline, All Avg)", -1),
        ("large_mlp", "baseline", "equal-parameter MLP collapses (< baseline, All Avg)", -1),
        ("vit_only", "baseline", "ViT only ~ baseline (All Avg)", 0),
        ("dpa_untrained_perceiver", "baseline", "untrained perceiver > baseline (All Avg)", +1),
        ("dpa_early_fusion", "dpa", "early fusion > DPA on single-turn benchmarks (All Avg)", +1),
        ("dpa_frozen_perceiver", "dpa", "frozen perceiver < DPA (All Avg)", -1),
        ("dpa_frozen_perceiver", "baseline", "frozen perceiver > baseline (All Avg)", +1),
    )
    for a, b, claim, sign in directional:
        if a in models and b in models:
            add(claim, points(a, b, "all_avg"), diff(a, b, "all_avg"), sign)
    alignment = results.get("alignment")
    if alignment:
        add(
            "DPA's MIR below the baseline's",
            None,
            [alignment[x]["dpa"]["mir"] - alignment[x]["baseline"]["mir"] for x in seeds],
            -1,
            "MIR",
        )
    return rows


def _cell(mean: float, std: float, n: int) -> str:
    return f"{100 * mean:.1f} ± {100 * std:.1f}" if n > 1 else f"{100 * mean:.1f}"


def main_table(report: dict) -> list[str]:
    """The paper's main-table shape: one row per model, mean ± std over seeds, Δ vs the baseline."""
    models, n = report["models"], len(report["seeds"])
    lines = ["| Model | " + " | ".join(HEADERS) + " | Δ Multi Avg |", "|---" * (len(HEADERS) + 2) + "|"]
    # The table's order (the perceiver VLM, then the variants as run), not report.json's sorted keys.
    order = [m for m in (PERCEIVER_VLM, *report["variants"]) if m in models]
    for name in order + sorted(set(models) - set(order)):
        m = models[name]
        cells = [_cell(m["mean"][c], m["std"][c], n) for c in COLUMNS]
        delta = (
            "" if name in ("baseline", PERCEIVER_VLM) else f"{100 * m['delta_vs_baseline']['multi_avg']:+.1f}"
        )
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {delta} |")
    return lines


def kinds_table(report: dict) -> list[str]:
    """Accuracy per question kind of the image benchmarks: baseline, perceiver VLM, DPA, majority."""
    models = report["models"]
    shown = [m for m in ("baseline", PERCEIVER_VLM, "dpa") if m in models]
    lines = ["| kind | " + " | ".join(shown) + " | majority |", "|---" * (len(shown) + 2) + "|"]
    for kind, base in models["baseline"]["kinds"].items():
        cells = [f"{100 * models[m]['kinds'][kind]['accuracy']:.1f}" for m in shown]
        lines.append(f"| {kind} | " + " | ".join(cells) + f" | {100 * base['majority']:.1f} |")
    return lines


def claims_table(report: dict) -> list[str]:
    lines = ["| claim | paper (4B) | ours (d) | spread (s) | verdict |", "|---|---|---|---|---|"]
    for c in report["claims"]:
        scale, unit, digits = (100, " pts", 1) if c["unit"] == "accuracy" else (1, "", 3)
        paper = "" if c["paper"] is None else f"{scale * c['paper']:+.1f}{unit}"
        ours, spread = f"{scale * c['ours']:+.{digits}f}{unit}", f"{scale * c['spread']:.{digits}f}"
        lines.append(f"| {c['claim']} | {paper} | {ours} | {spread} | {c['verdict']} |")
    return lines


def summary_line(report: dict) -> str:
    seeds = ", ".join(map(str, report["seeds"]))
    return (
        f"Preset {report['preset'] or 'custom'}; seeds {seeds}; {report['compute_s'] / 60:.1f} min of "
        "compute (the units' wall times when made). Accuracy in points (mean ± std over seeds) on the "
        "held-out nano benchmarks; Multi Avg = mean of General, Reasoning, Perception; All Avg = mean of "
        "all four."
    )


def readme_section(report: dict, folder: str) -> str:
    """The README's nano results, from a report.json whose plots lie in `folder` (README-relative);
    the per-kind table stays in the report."""
    lines = [summary_line(report), "", *main_table(report), "", RULE, ""]
    lines += [*claims_table(report), "", f"![nano scores]({folder}/scores.png)"]
    return "\n".join(lines) + "\n"


def render_markdown(report: dict) -> str:
    seeds, models = report["seeds"], report["models"]
    n = len(seeds)
    lines = ["# Nano protocol report", "", summary_line(report), "", "## Main table", "", *main_table(report)]
    lines += [
        "",
        f"`{PERCEIVER_VLM}` is the small VLM (perceiver LM as its LM) that DPA's perceiver starts from"
        + (
            ": the shipped one, trained once on the validation world (its stage-1 loss and training "
            "curves are from there) and scored here on each seed's benchmarks."
            if report["shipped_perceiver_vlm"]
            else ", trained on each seed."
        ),
        "",
        "## Per question kind (image benchmarks)",
        "",
        *kinds_table(report),
    ]
    unigram = report["caption_unigram_loss"]["mean"]
    lines += [
        "",
        "## Stage 1: caption loss",
        "",
        f"Nats per caption token at the end of stage 1 (only the connector trains); a connector that "
        f"gives the LM nothing it can read leaves it at the captions' unigram level, {unigram:.2f}.",
        "",
        "| Model | stage-1 loss |",
        "|---|---|",
        *(f"| {name} | {v['mean']:.3f} |" for name, v in report["stage1_caption_loss"].items()),
    ]
    ref = report["reference_text"]
    lines += [
        "",
        "## Text forgetting",
        "",
        f"The target LM alone scores {_cell(ref['mean'], ref['std'], n)} on the text benchmark before "
        "any VLM training; forgetting = that minus the VLM's Text score.",
        "",
        "| Model | Text | forgetting |",
        "|---|---|---|",
    ]
    for name, m in models.items():
        if name != PERCEIVER_VLM:
            text, f = _cell(m["mean"]["text"], m["std"]["text"], n), m["forgetting"]
            lines.append(f"| {name} | {text} | {_cell(f['mean'], f['std'], n)} |")
    if report["forgetting_reduction"] is not None:
        reduction = 100 * report["forgetting_reduction"]
        lines += [
            "",
            f"Relative reduction of forgetting, DPA vs baseline: {reduction:.1f}% (paper, 4B: 32.9%).",
        ]
    if report["cost"]:
        lines += [
            "",
            "## Cost, DPA vs baseline (measured side by side in this run)",
            "",
            *_cost_table(report["cost"]),
        ]
    if report["alignment"]:
        lines += ["", "## Modality integration (MIR, lower = image tokens closer to text)", ""]
        for name, a in report["alignment"].items():
            mir = a["mir"]
            lines.append(f"- {name}: MIR {mir['mean']:.3f}" + (f" ± {mir['std']:.3f}" if n > 1 else ""))
        lines += [
            "",
            f"Plots: seed {seeds[0]}.",
            "",
            "![modality gap](modality_gap.png)",
            "",
            "![layer similarity](layer_similarity.png)",
        ]
    lines += ["", "## The paper's claims", "", RULE, "", *claims_table(report)]
    lines += ["", "![scores](scores.png)", "", "![training curves](training_curves.png)", "", "## Units", ""]
    lines += ["| unit | wall time (s) |", "|---|---|"]
    lines += [
        f"| {u} | {r['wall_s']:.0f}{' (reused)' if r['reused'] else ''} |" for u, r in report["units"].items()
    ]
    return "\n".join(lines) + "\n"


def _cost_table(c: dict) -> list[str]:
    rows = (
        ("parameters", "parameters", "{:,}", "1.17x"),
        ("forward FLOPs, one image + prompt", "forward_flops", "{:,}", "1.14x (training)"),
        ("training wall time, both stages (s)", "training_s", "{:.0f}", ""),
        ("greedy decode (tokens/s, median)", "decode_tokens_per_s", "{:.1f}", "0.94x"),
    )
    lines = ["| | baseline | DPA | DPA / baseline | paper (4B) |", "|---|---|---|---|---|"]
    for label, key, form, paper in rows:
        base, dpa = form.format(c[key]["baseline"]), form.format(c[key]["dpa"])
        lines.append(f"| {label} | {base} | {dpa} | {c['ratios'][key]:.2f}x | {paper} |")
    return lines


def plot_scores(report: dict, path: Path) -> Path:
    models = report["models"]
    scores = {
        name: {h: {"accuracy": m["mean"][c]} for h, c in zip(HEADERS, COLUMNS, strict=True)}
        for name, m in models.items()
    }
    return plot_report(scores, path, title="Nano benchmarks (mean over seeds)")


def plot_training_curves(results: dict, path: Path) -> Path:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.4), dpi=120, layout="constrained")
    axes = fig.subplots(1, 2)
    seed, first = next(iter(results["seeds"].items()))
    for ax, stage in zip(axes, ("stage1", "stage2"), strict=True):
        curves = {name: model["training"][stage]["loss_curve"] for name, model in first["models"].items()}
        draw_loss_curves(ax, curves, f"{stage} training loss (seed {seed})")
    axes[1].legend(fontsize=7)
    fig.savefig(path)
    return path


def write_report(protocol, results: dict) -> dict:
    out = Path(protocol.out)
    report = build_report(protocol, results)
    (out / "report.json").write_text(json.dumps(report, indent=1, sort_keys=True) + "\n")
    plot_scores(report, out / "scores.png")
    plot_training_curves(results, out / "training_curves.png")
    if report["alignment"]:
        first = report["seeds"][0]
        for plot in ("modality_gap.png", "layer_similarity.png"):
            shutil.copyfile(out / f"seed-{first}" / "alignment" / plot, out / plot)
    (out / "report.md").write_text(render_markdown(report))
    return report


README_START, README_END = "<!-- nano-report:start -->", "<!-- nano-report:end -->"


def readme_with_report(readme: str, report: dict, folder: str) -> str:
    """`readme` with the text between the nano-report markers rendered anew from `report`."""
    start, end = readme.index(README_START) + len(README_START), readme.index(README_END)
    return readme[:start] + "\n" + readme_section(report, folder) + readme[end:]
