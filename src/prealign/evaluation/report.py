"""Models side by side: the scores `prealign eval` wrote under one folder, as a table and a plot.

Each model's scores live in `<folder>/<model>/<benchmark>.scores.json` (what
`prealign eval MODEL BENCH... --out <folder>/<model>` writes).
"""

from __future__ import annotations

import json
from pathlib import Path

SUFFIX = ".scores.json"


def collect_scores(folder: str | Path) -> dict[str, dict[str, dict]]:
    """model -> benchmark -> scores, for every `<model>/<benchmark>.scores.json` under `folder`."""
    found: dict[str, dict[str, dict]] = {}
    for path in sorted(Path(folder).glob(f"*/*{SUFFIX}")):
        found.setdefault(path.parent.name, {})[path.name.removesuffix(SUFFIX)] = json.loads(path.read_text())
    if not found:
        raise FileNotFoundError(
            f"no <model>/<benchmark>{SUFFIX} under {folder}; write them with "
            f"`prealign eval MODEL BENCH... --out {folder}/<model>`"
        )
    return found


def benchmarks_of(scores: dict[str, dict[str, dict]]) -> list[str]:
    return sorted({bench for per_model in scores.values() for bench in per_model})


def format_report(scores: dict[str, dict[str, dict]]) -> str:
    """Accuracy per model and benchmark, and the mean over the benchmarks a model has all of."""
    benches = benchmarks_of(scores)
    width = max(12, *(len(b) + 2 for b in benches))
    lines = [f"{'model':<24}" + "".join(f"{b:>{width}}" for b in benches) + f"{'mean':>{width}}"]
    rows = {
        model: [per_model.get(b, {}).get("accuracy") for b in benches] for model, per_model in scores.items()
    }
    rows["majority answer"] = [_majority(scores, b) for b in benches]
    for name, cells in rows.items():
        mean = sum(cells) / len(cells) if None not in cells else None
        lines.append(
            f"{name:<24}"
            + "".join(f"{c:>{width}.3f}" if c is not None else f"{'-':>{width}}" for c in [*cells, mean])
        )
    return "\n".join(lines)


def _majority(scores: dict[str, dict[str, dict]], bench: str) -> float | None:
    """The benchmark's majority-answer baseline (the same for every model that ran it)."""
    return next((m[bench]["majority"] for m in scores.values() if "majority" in m.get(bench, {})), None)


def plot_report(scores: dict[str, dict[str, dict]], path: str | Path, title: str = "") -> Path:
    """Grouped bars: one group per benchmark, one bar per model (accuracy)."""
    from matplotlib.figure import Figure

    benches = benchmarks_of(scores)
    models = list(scores)
    group = max(1.4, 0.3 * len(models))  # inches per benchmark: bars stay readable with many models
    fig = Figure(figsize=(1.6 + group * len(benches), 3.6), dpi=120, layout="constrained")
    ax = fig.subplots()
    bar = 0.8 / len(models)
    for i, model in enumerate(models):
        xs = [j + (i - (len(models) - 1) / 2) * bar for j, b in enumerate(benches) if b in scores[model]]
        ys = [scores[model][b]["accuracy"] for b in benches if b in scores[model]]
        bars = ax.bar(xs, ys, bar, label=model)
        if len(models) <= 4:  # beyond that the labels overlap; the numbers are in the tables
            ax.bar_label(bars, fmt="%.2f", fontsize=7)
    for j, bench in enumerate(benches):
        majority = _majority(scores, bench)
        if majority is not None:
            label = "majority answer" if j == 0 else None
            ax.hlines(majority, j - 0.45, j + 0.45, colors="black", linestyles="dashed", label=label)
    ax.set_xticks(range(len(benches)), benches)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
