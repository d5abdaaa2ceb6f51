"""Small MLPs between the parts: the projector (ViT -> first LM), the aligner (perceiver -> target)
and the equal-parameter MLP that stands in for the perceiver's LM blocks in the large-MLP ablation."""

from __future__ import annotations

from torch import nn

from ..config import ProjectorType


def build_projector(kind: ProjectorType, in_dim: int, out_dim: int) -> nn.Sequential:
    """A projector of the given kind.

    - `mlp2x_gelu`: LLaVA-1.5's Linear(in, out) -> GELU -> Linear(out, out).
    - `linear_relu_linear`: DPA's aligner as the authors build it, Linear(in, in) -> ReLU -> Linear(in, out).
    - `linear`: LLaVA-1.0's single Linear(in, out).
    - `merger`: nothing here - a native-resolution tower's own merger (inside the tower) projects.
    """
    if kind == "merger":
        return nn.Sequential()
    if kind == "mlp2x_gelu":
        return nn.Sequential(nn.Linear(in_dim, out_dim), nn.GELU(), nn.Linear(out_dim, out_dim))
    if kind == "linear_relu_linear":
        return nn.Sequential(nn.Linear(in_dim, in_dim), nn.ReLU(), nn.Linear(in_dim, out_dim))
    if kind == "linear":
        return nn.Sequential(nn.Linear(in_dim, out_dim))
    raise ValueError(
        f"Unknown projector type {kind!r}; expected mlp2x_gelu, linear_relu_linear, linear or merger."
    )


class EqualParameterMLP(nn.Module):
    """Position-wise d -> h -> d MLP: the perceiver LM blocks' stand-in with the same parameter count."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.up = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.down = nn.Linear(hidden_dim, dim)

    def forward(self, hidden):
        return self.down(self.act(self.up(hidden)))
