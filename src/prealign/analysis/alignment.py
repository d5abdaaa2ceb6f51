"""Where image tokens sit relative to text tokens inside the target LM, layer by layer.

- **Modality gap and MIR** (Huang et al., "Deciphering Cross-Modal Alignment in Large
  Vision-Language Models with Modality Integration Rate"): after each layer of the target LM, the
  Fréchet distance between the hidden states at image positions and at text positions, both
  scaled by the text tokens' mean norm (so that layers and models of any width compare) and with
  tokens whose norm lies more than three standard deviations from the median replaced by the
  median token. MIR is log10 of the sum over layers; lower means image tokens closer to text.
  The paper reads DPA's smaller gap at every layer as less "shallow alignment" work for the LM.
- **Layer similarity**: linear CKA (Kornblith et al., 2019) between the hidden states of every
  two layers, for image tokens and text tokens apart; the paper reads a block structure shared
  with the text tokens' matrix as image tokens living in the text space's geometry.

Layers are read as transformers returns them: the input embeddings, then each decoder layer's
output, the last one after the LM's final norm. Image positions are those that receive visual
features (`image_span_mask`: `<image>`, plus the markers when DPA writes into them); text
positions are every other attended position except the image markers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import DataSource, LlavaDataset, PrealignCollator


@dataclass
class LayerStates:
    """Hidden states of the target LM, per layer (input embeddings first): (tokens, hidden)."""

    image: list[torch.Tensor]
    text: list[torch.Tensor]


SAMPLES = 64  # the records an alignment analysis reads unless told (the first ones of the file)


def sample_batches(processor, source, samples: int = SAMPLES, batch_size: int = 8) -> list[dict]:
    """The first `samples` records of a LLaVA-format `source` (a DataSource or a path), collated as
    in training: every model analysed on one file reads the same tokens."""
    dataset = LlavaDataset([source if isinstance(source, DataSource) else DataSource(source)], processor)
    collate = PrealignCollator(processor)
    picked = [dataset[i] for i in range(min(samples, len(dataset)))]
    return [collate(picked[i : i + batch_size]) for i in range(0, len(picked), batch_size)]


@torch.no_grad()
def collect_layer_states(model, batches: Iterable[dict], progress: bool = False) -> LayerStates:
    """Run the model over `batches` (collated samples) and keep every layer's states at image and at
    text positions, in float32 on the CPU."""
    model.eval()
    config = model.config
    markers = torch.tensor(
        [config.image_token_id, config.image_start_token_id, config.image_end_token_id], device=model.device
    )
    image_chunks: list[list[torch.Tensor]] = []
    text_chunks: list[list[torch.Tensor]] = []
    for batch in tqdm(batches, desc="hidden states", unit="batch", disable=not progress):
        inputs = {k: v.to(model.device) for k, v in batch.items() if k != "labels"}
        out = model(**inputs, output_hidden_states=True, use_cache=False)
        ids = inputs["input_ids"]
        image = model.model.image_span_mask(ids)
        text = inputs["attention_mask"].bool() & ~torch.isin(ids, markers)
        if not image_chunks:
            image_chunks = [[] for _ in out.hidden_states]
            text_chunks = [[] for _ in out.hidden_states]
        for layer, states in enumerate(out.hidden_states):
            image_chunks[layer].append(states[image].float().cpu())
            text_chunks[layer].append(states[text].float().cpu())
    if not image_chunks:
        raise ValueError("no batches to analyse")
    states = LayerStates([torch.cat(c) for c in image_chunks], [torch.cat(c) for c in text_chunks])
    if states.image[0].shape[0] < 2 or states.text[0].shape[0] < 2:
        raise ValueError("the batches hold fewer than two image or two text tokens; give samples with images")
    return states


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of two sets of row vectors, in float64.

    tr((S_a S_b)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric
    S_a^(1/2) S_b S_a^(1/2) (the same eigenvalues), which stays real and stable where a general
    matrix square root does not."""
    a, b = a.double(), b.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    values, vectors = torch.linalg.eigh(cov_a)
    root_a = vectors @ torch.diag(values.clamp(min=0).sqrt()) @ vectors.T
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    mean_gap = (a.mean(0) - b.mean(0)).square().sum()
    return float(mean_gap + cov_a.trace() + cov_b.trace() - 2 * cross)


def replace_norm_outliers(x: torch.Tensor, sigmas: float = 3.0) -> torch.Tensor:
    """A copy of `x` whose rows with a norm more than `sigmas` standard deviations from the median
    norm are replaced by the per-dimension median row."""
    norms = x.norm(dim=-1)
    outliers = (norms - norms.median()).abs() > sigmas * norms.std()
    out = x.clone()
    out[outliers] = x.median(dim=0).values
    return out


def modality_gap(image: torch.Tensor, text: torch.Tensor) -> float:
    """The Fréchet distance between image and text tokens of one layer, in units of the text
    tokens' mean norm, outliers replaced."""
    scale = 1.0 / text.norm(dim=-1).mean()
    return frechet_distance(replace_norm_outliers(image * scale), replace_norm_outliers(text * scale))


def modality_gaps(states: LayerStates) -> list[float]:
    """The gap after each layer of the target LM (the input embeddings left out, as MIR does)."""
    return [modality_gap(image, text) for image, text in zip(states.image[1:], states.text[1:], strict=True)]


def modality_integration_rate(gaps: list[float]) -> float:
    return math.log10(sum(gaps))


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA of two representations of the same tokens (rows): 1 for the same geometry up to
    rotation and scale, near 0 for unrelated ones."""
    x, y = x.double() - x.double().mean(0), y.double() - y.double().mean(0)
    cross = (y.T @ x).square().sum()
    return float(cross / ((x.T @ x).square().sum().sqrt() * (y.T @ y).square().sum().sqrt()))


def layer_similarity(states: list[torch.Tensor]) -> torch.Tensor:
    """Linear CKA between every two layers' states of the same tokens: (layers, layers)."""
    n = len(states)
    matrix = torch.ones(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = linear_cka(states[i], states[j])
    return matrix


@dataclass
class AlignmentReport:
    """One model's modality gap per layer, its MIR, and its layer-similarity matrices."""

    gaps: list[float]
    mir: float
    image_similarity: torch.Tensor
    text_similarity: torch.Tensor
    image_tokens: int
    text_tokens: int

    @classmethod
    def of(cls, states: LayerStates) -> AlignmentReport:
        gaps = modality_gaps(states)
        return cls(
            gaps=gaps,
            mir=modality_integration_rate(gaps),
            image_similarity=layer_similarity(states.image),
            text_similarity=layer_similarity(states.text),
            image_tokens=states.image[0].shape[0],
            text_tokens=states.text[0].shape[0],
        )

    def to_dict(self) -> dict:
        return {
            "modality_gap_per_layer": self.gaps,
            "mir": self.mir,
            "image_layer_similarity": self.image_similarity.tolist(),
            "text_layer_similarity": self.text_similarity.tolist(),
            "image_tokens": self.image_tokens,
            "text_tokens": self.text_tokens,
        }


def format_alignment(reports: dict[str, AlignmentReport]) -> str:
    """Modality gap per layer, one column per model, and MIR at the bottom."""
    names = list(reports)
    width = max(12, *(len(n) + 2 for n in names))
    lines = [f"{'layer':<8}" + "".join(f"{n:>{width}}" for n in names)]
    for layer in range(max(len(r.gaps) for r in reports.values())):
        cells = [
            f"{r.gaps[layer]:>{width}.4f}" if layer < len(r.gaps) else " " * width for r in reports.values()
        ]
        lines.append(f"{layer + 1:<8}" + "".join(cells))
    lines.append(f"{'MIR':<8}" + "".join(f"{r.mir:>{width}.4f}" for r in reports.values()))
    tokens = ", ".join(f"{n}: {r.image_tokens} image / {r.text_tokens} text" for n, r in reports.items())
    lines.append(f"(Fréchet distance after each layer; MIR = log10 of the sum; tokens {tokens})")
    return "\n".join(lines)


def plot_modality_gaps(reports: dict[str, AlignmentReport], path: str | Path, title: str = "") -> Path:
    """The gap after each layer, a line per model, MIR in the legend."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.6), dpi=120, layout="constrained")
    ax = fig.subplots()
    for name, report in reports.items():
        label = f"{name} (MIR {report.mir:.2f})"
        ax.plot(range(1, len(report.gaps) + 1), report.gaps, marker="o", label=label)
    ax.set_xlabel("target LM layer")
    ax.set_ylabel("modality gap (Fréchet distance)")
    ax.set_yscale("log")
    ax.set_title(title or "Image vs text tokens inside the target LM")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_layer_similarity(reports: dict[str, AlignmentReport], path: str | Path) -> Path:
    """Layer-by-layer CKA, a row per model: image tokens left, text tokens right."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2 * len(reports)), dpi=120, layout="constrained")
    axes = fig.subplots(len(reports), 2, squeeze=False)
    for row, (name, report) in enumerate(reports.items()):
        for ax, tokens, matrix in (
            (axes[row][0], "image tokens", report.image_similarity),
            (axes[row][1], "text tokens", report.text_similarity),
        ):
            shown = ax.imshow(matrix.numpy(), vmin=0, vmax=1, cmap="viridis")
            ax.set_title(f"{name}: {tokens}", fontsize=9)
            ax.set_xlabel("layer (0: embeddings)")
            ax.set_ylabel("layer")
            fig.colorbar(shown, ax=ax, fraction=0.046)
    return _save(fig, path)


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
