"""`prealign analyze`: cost per component, the paper's cost ratios at scale, and the alignment
analyses (modality gap per layer, MIR, layer similarity)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..analysis import (
    AlignmentReport,
    collect_layer_states,
    format_alignment,
    format_cost,
    forward_flops,
    one_image_sample,
    parameter_counts,
    plot_layer_similarity,
    plot_modality_gaps,
    sample_batches,
)
from ..analysis.paper_scale import Workload, format_scale_table
from ..assembly import load_saved
from ..data import DataSource
from .common import default_of, distinct_names


def cost_command(args: argparse.Namespace) -> int:
    """Parameters and forward FLOPs per component of a saved model, on one prompt with one image."""
    model, processor = load_saved(args.model)
    sample = one_image_sample(processor, args.question)
    flops = forward_flops(model, sample)
    print(format_cost(parameter_counts(model), flops, sample["input_ids"].shape[1]))
    return 0


def scale_command(args: argparse.Namespace) -> int:
    """The paper's cost ratios from its published architectures (meta device, analytic FLOPs)."""
    workload = Workload(args.patches, args.image_tokens, args.text_tokens, args.new_tokens)
    print(format_scale_table(workload))
    return 0


def alignment_command(args: argparse.Namespace) -> int:
    """Modality gap per target layer, MIR and layer similarity of saved models on one data file."""
    names = distinct_names(args.names, args.models)
    reports = {}
    for name, folder in zip(names, args.models, strict=True):
        model, processor = load_saved(folder)
        batches = sample_batches(
            processor, DataSource(args.data, args.image_root), args.samples, args.batch_size
        )
        reports[name] = AlignmentReport.of(collect_layer_states(model, batches, progress=True))
    print(format_alignment(reports))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "alignment.json").write_text(
        json.dumps({n: r.to_dict() for n, r in reports.items()}, indent=1) + "\n"
    )
    plots = (
        plot_modality_gaps(reports, out / "modality_gap.png"),
        plot_layer_similarity(reports, out / "layer_similarity.png"),
    )
    print(f"plots: {plots[0]}, {plots[1]}; numbers: {out / 'alignment.json'}")
    return 0


def add_analyze(commands: argparse._SubParsersAction) -> None:
    analyze = commands.add_parser("analyze", help="analyses of a saved model")
    analyze = analyze.add_subparsers(dest="analyze_command", required=True)
    p = analyze.add_parser("cost", help="parameters and forward FLOPs per component (one image, one prompt)")
    p.add_argument("model", help="a saved model folder (with its processor)")
    p.add_argument("--question", default=default_of(one_image_sample, "question"), help="the prompt's text")
    p.set_defaults(run=cost_command)

    workload = Workload()
    p = analyze.add_parser(
        "scale", help="the paper's parameter/FLOP/throughput ratios from published architectures, no weights"
    )
    p.add_argument("--patches", type=int, default=workload.patches, help="vision-tower tokens per image")
    p.add_argument("--image-tokens", type=int, default=workload.image_tokens, help="image span in the LMs")
    p.add_argument("--text-tokens", type=int, default=workload.text_tokens, help="text tokens per sample")
    p.add_argument("--new-tokens", type=int, default=workload.new_tokens, help="tokens generated per request")
    p.set_defaults(run=scale_command)

    p = analyze.add_parser(
        "alignment", help="modality gap per target layer (MIR) and layer similarity, models side by side"
    )
    p.add_argument("models", nargs="+", help="saved model folders (with their processors)")
    p.add_argument("--data", required=True, help="a LLaVA-format JSON/JSONL file with images")
    p.add_argument("--image-root", help="folder the records' image paths are relative to")
    p.add_argument(
        "--samples",
        type=int,
        default=default_of(sample_batches, "samples"),
        help="records to analyse (the first ones)",
    )
    p.add_argument("--batch-size", type=int, default=default_of(sample_batches, "batch_size"))
    p.add_argument("--names", nargs="+", help="a name per model (default: the folder names)")
    p.add_argument("--out", default="alignment", help="folder for alignment.json and the plots")
    p.set_defaults(run=alignment_command)
