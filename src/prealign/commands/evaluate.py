"""`prealign eval`, `report`, `vlmeval` and `bench-to-tsv`: benchmarks answered and scored, in
prealign's runner or in VLMEvalKit."""

from __future__ import annotations

import argparse
import json

from ..assembly import load_saved
from ..evaluation import run_benchmark
from ..evaluation.answering import VLMEVAL_MAX_NEW_TOKENS
from ..evaluation.report import collect_scores, format_report, plot_report
from ..evaluation.tsv import benchmark_to_tsv
from .common import default_of


def evaluate_command(args: argparse.Namespace) -> int:
    """Answer and score benchmark files with a saved model; resumes an interrupted run."""
    model, processor = load_saved(args.model)
    summary = {}
    for benchmark in args.benchmarks:
        scores = run_benchmark(
            model,
            processor,
            benchmark,
            args.out,
            image_root=args.image_root,
            batch_size=args.batch_size,
            max_new_tokens=args.max_new_tokens,
            fresh=args.fresh,
        )
        summary[benchmark] = scores
        print(f"{benchmark}: accuracy {scores['accuracy']:.3f} on {scores['n']} items")
        print(f"  {'kind':<24}{'n':>6}{'accuracy':>10}{'majority':>10}{'F1':>7}")
        for kind, report in scores["kinds"].items():
            f1 = f"{report['f1']:>7.2f}" if "f1" in report else ""
            print(f"  {kind:<24}{report['n']:>6}{report['accuracy']:>10.2f}{report['majority']:>10.2f}{f1}")
    if args.json:
        print(json.dumps(summary, indent=1))
    return 0


def report_command(args: argparse.Namespace) -> int:
    """Models evaluated into one folder, side by side: a table, and a bar plot if asked."""
    scores = collect_scores(args.folder)
    print(format_report(scores))
    if args.plot:
        print(f"plot: {plot_report(scores, args.plot, title=args.title)}")
    return 0


def vlmeval_command(args: argparse.Namespace) -> int:
    """VLMEvalKit's own command line with a prealign model registered as `--model prealign`."""
    try:  # an optional dependency: only this command needs it
        from ..evaluation.vlmeval_adapter import run_vlmeval
    except ImportError as error:
        raise SystemExit(f"prealign vlmeval: {error}") from error
    run_vlmeval(args.model, args.vlmeval_args, max_new_tokens=args.max_new_tokens)
    return 0


def bench_to_tsv_command(args: argparse.Namespace) -> int:
    """A prealign benchmark file as a VLMEvalKit TSV."""
    print(f"written to {benchmark_to_tsv(args.benchmark, args.out, args.image_root)}")
    return 0


def add_evaluate(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "eval", help="answer benchmark files with a saved model and score them (resumes where it stopped)"
    )
    p.add_argument("model", help="a saved model folder (with its processor, as training writes it)")
    p.add_argument("benchmarks", nargs="+", help="benchmark JSON/JSONL files: id, question, answer, scoring")
    p.add_argument("--out", required=True, help="folder for <name>.predictions.jsonl and <name>.scores.json")
    p.add_argument("--image-root", help="folder the items' image paths are relative to (default: the file's)")
    p.add_argument("--batch-size", type=int, default=default_of(run_benchmark, "batch_size"))
    p.add_argument("--max-new-tokens", type=int, default=default_of(run_benchmark, "max_new_tokens"))
    p.add_argument("--json", action="store_true", help="also print the scores as JSON")
    p.add_argument(
        "--fresh", action="store_true", help="discard predictions already in --out instead of resuming them"
    )
    p.set_defaults(run=evaluate_command)

    p = commands.add_parser(
        "vlmeval",
        help="run VLMEvalKit (the paper's harness) on a saved model: prealign vlmeval MODEL --data MMStar "
        "... (every argument after MODEL is VLMEvalKit's; needs prealign[vlmeval])",
        description="Runs VLMEvalKit's own command line in-process with the model registered as "
        "`--model prealign`; the arguments after MODEL are VLMEvalKit's (--data, --judge, --work-dir, "
        "--mode, --reuse, ...). A dataset VLMEvalKit does not know is read from $LMUData/NAME.tsv "
        "(`prealign bench-to-tsv` writes one).",
    )
    p.add_argument("model", help="a saved model folder (with its processor)")
    p.add_argument(
        "--max-new-tokens",
        type=int,
        default=VLMEVAL_MAX_NEW_TOKENS,
        help="the longest answer (before VLMEvalKit's args)",
    )
    p.add_argument("vlmeval_args", nargs=argparse.REMAINDER, help="VLMEvalKit's arguments")
    p.set_defaults(run=vlmeval_command)

    p = commands.add_parser(
        "bench-to-tsv",
        help="write a benchmark file (JSON/JSONL, as `prealign eval` reads) as a VLMEvalKit TSV",
    )
    p.add_argument("benchmark", help="a benchmark JSON/JSONL file: id, question, answer, scoring, image?")
    p.add_argument("out", help="the TSV to write (VLMEvalKit reads $LMUData/NAME.tsv for --data NAME)")
    p.add_argument("--image-root", help="folder the items' image paths are relative to (default: the file's)")
    p.set_defaults(run=bench_to_tsv_command)

    p = commands.add_parser("report", help="compare the models `prealign eval` scored into one folder")
    p.add_argument("folder", help="holds <model>/<benchmark>.scores.json")
    p.add_argument("--plot", help="also draw the accuracies as grouped bars into this PNG")
    p.add_argument("--title", default="", help="the plot's title")
    p.set_defaults(run=report_command)
