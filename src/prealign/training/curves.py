"""Training loss curves as PNG: each stage writes `loss.png` beside its checkpoint, and the nano
report draws its stages with the same function."""

from __future__ import annotations

from pathlib import Path

LOSS_PLOT = "loss.png"


def loss_curve(log_history: list[dict]) -> list[tuple[int, float]]:
    """(step, loss) of every logged training step in a Trainer's `state.log_history`."""
    return [(row["step"], row["loss"]) for row in log_history if "loss" in row]


def draw_loss_curves(ax, curves: dict[str, list[tuple[int, float]]], title: str) -> None:
    """One line per named curve on a log-scaled matplotlib axis."""
    for name, curve in curves.items():
        if curve:
            ax.plot([step for step, _ in curve], [loss for _, loss in curve], label=name)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")


def write_loss_plot(log_history: list[dict], output_dir: str | Path) -> Path | None:
    """The stage's loss curve as `output_dir/loss.png` (nothing when no loss was logged)."""
    from matplotlib.figure import Figure

    curve = loss_curve(log_history)
    if not curve:
        return None
    folder = Path(output_dir)
    fig = Figure(figsize=(5, 3.2), dpi=120, layout="constrained")
    draw_loss_curves(fig.subplots(), {"loss": curve}, f"{folder.name}: training loss")
    folder.mkdir(parents=True, exist_ok=True)
    fig.savefig(folder / LOSS_PLOT)
    return folder / LOSS_PLOT
