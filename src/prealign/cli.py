"""The `prealign` command."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from . import __version__


def smoke(args: argparse.Namespace) -> int:
    """Build tiny baseline and DPA models from parts and exercise the whole model contract."""
    from .smoke import run_smoke

    return 1 if run_smoke(args.variants, args.new_tokens, args.seed) else 0


def data_check(args: argparse.Namespace) -> int:
    """Validate LLaVA-format files; exit 1 if any error class not tolerated is present."""
    import json

    from .data.check import check_data, format_report, processor_for_check

    processor = processor_for_check(args.tokenizer, args.image_tokens)
    report = check_data(
        args.files,
        processor,
        image_root=args.image_root,
        max_length=args.max_length,
        show=args.show,
        prompt_format=args.format,
        progress=not args.json,
        allow_outside_root=args.allow_outside_root,
    )
    tolerate = set(args.tolerate)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(format_report(report, tolerate))
    errors = report.errors(tolerate)
    if errors and not args.json:
        print(f"\nFAILED: {', '.join(f'{k}={v}' for k, v in errors.items())}")
    return 1 if errors else 0


def train_command(args: argparse.Namespace) -> int:
    """One stage of the recipe; under torchrun every rank runs this."""
    from .training import load_settings
    from .training.run import run_stage

    run_stage(load_settings(args.config, args.overrides))
    return 0


def evaluate_command(args: argparse.Namespace) -> int:
    """Answer and score benchmark files with a saved model; resumes an interrupted run."""
    import json

    from . import PrealignForConditionalGeneration, PrealignProcessor
    from .evaluation import run_benchmark

    model = PrealignForConditionalGeneration.from_pretrained(args.model)
    processor = PrealignProcessor.from_pretrained(args.model)
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
    from .evaluation.report import collect_scores, format_report, plot_report

    scores = collect_scores(args.folder)
    print(format_report(scores))
    if args.plot:
        print(f"plot: {plot_report(scores, args.plot, title=args.title)}")
    return 0


def cost_command(args: argparse.Namespace) -> int:
    """Parameters and forward FLOPs per component of a saved model, on one prompt with one image."""
    from . import PrealignForConditionalGeneration, PrealignProcessor
    from .analysis import format_cost, forward_flops, one_image_sample, parameter_counts

    model = PrealignForConditionalGeneration.from_pretrained(args.model)
    processor = PrealignProcessor.from_pretrained(args.model)
    sample = one_image_sample(processor, args.question)
    flops = forward_flops(model, sample)
    print(format_cost(parameter_counts(model), flops, sample["input_ids"].shape[1]))
    return 0


def bench_command(args: argparse.Namespace) -> int:
    """Speed side by side: the baseline, DPA and transformers' Llava, interleaved, medians and ratios."""
    import json

    from tqdm import tqdm

    from .analysis.speed import BenchSettings, folder_contenders, format_bench, preset_contenders, run_bench

    contenders = folder_contenders(args.models, args.names) if args.models else preset_contenders(args.preset)
    settings = BenchSettings(
        repeats=args.repeats,
        new_tokens=args.new_tokens,
        train_batch=args.train_batch,
        compile_decode=args.compile,
        device=args.device,
        dtype=args.dtype,
        attn_implementation=args.attn_implementation,
    )
    result = run_bench(contenders, settings, progress=lambda rounds: tqdm(rounds, desc="bench rounds"))
    print(format_bench(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result.to_dict(), indent=1) + "\n")
        print(f"written to {args.json}")
    return 0


def scale_command(args: argparse.Namespace) -> int:
    """The paper's cost ratios from its published architectures (meta device, analytic FLOPs)."""
    from .analysis.paper_scale import Workload, format_scale_table

    workload = Workload(args.patches, args.image_tokens, args.text_tokens, args.new_tokens)
    print(format_scale_table(workload))
    return 0


def alignment_command(args: argparse.Namespace) -> int:
    """Modality gap per target layer, MIR and layer similarity of saved models on one data file."""
    import json

    from . import PrealignForConditionalGeneration, PrealignProcessor
    from .analysis import (
        AlignmentReport,
        collect_layer_states,
        format_alignment,
        plot_layer_similarity,
        plot_modality_gaps,
        sample_batches,
    )
    from .data import DataSource

    names = args.names or [Path(m).name for m in args.models]
    if len(names) != len(args.models) or len(set(names)) != len(names):
        raise SystemExit("give each model a distinct name (--names), one per model")
    reports = {}
    for name, folder in zip(names, args.models, strict=True):
        model = PrealignForConditionalGeneration.from_pretrained(folder)
        processor = PrealignProcessor.from_pretrained(folder)
        source = DataSource(args.data, args.image_root)
        batches = sample_batches(processor, source, args.samples, args.batch_size)
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


def export_command(args: argparse.Namespace) -> int:
    """A part of a saved model as a standalone Hugging Face folder."""
    from .export import export_part

    print(f"{args.part}: written to {export_part(args.model, args.part, args.out)}")
    return 0


def vlmeval_command(args: argparse.Namespace) -> int:
    """VLMEvalKit's own command line with a prealign model registered as `--model prealign`."""
    try:
        from .evaluation.vlmeval_adapter import run_vlmeval
    except ImportError as error:
        raise SystemExit(f"prealign vlmeval: {error}") from error
    run_vlmeval(args.model, args.vlmeval_args, max_new_tokens=args.max_new_tokens)
    return 0


def bench_to_tsv_command(args: argparse.Namespace) -> int:
    """A prealign benchmark file as a VLMEvalKit TSV."""
    from .evaluation.tsv import benchmark_to_tsv

    print(f"written to {benchmark_to_tsv(args.benchmark, args.out, args.image_root)}")
    return 0


def convert_official_command(args: argparse.Namespace) -> int:
    """The authors' released checkpoint as a prealign folder."""
    from .official import PART_FIELDS, convert_official

    overrides = {part: getattr(args, part) for part in PART_FIELDS}
    print(f"written to {convert_official(args.source, args.out, **overrides)}")
    return 0


def _conversations(args: argparse.Namespace):
    from .modeling import PrealignForConditionalGeneration
    from .processing import PrealignProcessor
    from .serving.conversation import Conversations

    model = PrealignForConditionalGeneration.from_pretrained(args.model)
    return Conversations(model, PrealignProcessor.from_pretrained(args.model), args.feature_cache_images)


def chat_command(args: argparse.Namespace) -> int:
    """Talk to a saved model in the terminal."""
    from .serving.terminal import run_chat

    run_chat(_conversations(args), sys.stdin, sys.stdout, args.max_new_tokens, args.temperature, args.system)
    return 0


def serve_command(args: argparse.Namespace) -> int:
    """Serve a saved model over an OpenAI-compatible HTTP API."""
    from .serving.limits import RequestLimits
    from .serving.openai_server import serve

    limits = RequestLimits(
        max_body_bytes=args.max_body_mb * 2**20,
        max_image_pixels=args.max_image_pixels,
        max_images=args.max_images,
        max_tokens=args.max_tokens,
        max_queue=args.max_queue,
        timeout_s=args.timeout,
        max_batch=args.max_batch,
        slice_tokens=args.slice_tokens,
    )
    name = args.name or Path(args.model).name
    serve(_conversations(args), name, args.host, args.port, args.max_new_tokens, limits)
    return 0


def nano_data(args: argparse.Namespace) -> int:
    """Generate the nano world's data sets, benchmarks, text corpus and tokenizer."""
    import dataclasses

    from .nano import NanoDataSpec, build_nano_data

    sizes = {
        f.name: getattr(args, f.name) for f in dataclasses.fields(NanoDataSpec) if getattr(args, f.name, None)
    }
    start = time.perf_counter()
    paths = build_nano_data(args.out, NanoDataSpec(**{**sizes, "seed": args.seed}))
    print(f"nano world written to {args.out} in {time.perf_counter() - start:.1f} s:")
    for name, path in paths.items():
        print(f"  {name:<18}{path}")
    return 0


def nano_pretrain(args: argparse.Namespace) -> int:
    """Pre-train one nano backbone from the world's tokenizer and print how much it learned."""
    import dataclasses

    from transformers import AutoTokenizer

    from .nano import backbones

    tokenizer = AutoTokenizer.from_pretrained(str(Path(args.data) / "tokenizer"))
    budget = backbones.BackboneBudget()  # the shipped backbones' settings
    start = time.perf_counter()
    if args.nano_command == "pretrain-vit":
        backbones.pretrain_vit_part(tokenizer, Path(args.out), args.seed, budget, steps=args.steps)
        result = backbones.evaluate_vit(args.out)
        print(
            f"image->caption top-1 {result['top1']:.2f} (chance {result['chance']:.2f}); "
            f"held-out loss {result['loss']:.3f}"
        )
    else:
        if args.row_length is not None:  # 0: padded batches
            budget = dataclasses.replace(budget, lm_row_length=args.row_length or None)
        backbones.pretrain_lm_part(
            tokenizer, Path(args.out), args.seed, budget, args.size, steps=args.steps, lr=args.lr
        )
        # Score the saved checkpoint, as the manifest does: the model the Trainer leaves in memory
        # still runs under its bf16 autocast, and near-tie answers flip (spatial 0.55 vs 0.65).
        print(backbones.format_lm_scores(backbones.evaluate_language_model(args.out, budget.eval_per_kind)))
    print(f"trained in {time.perf_counter() - start:.0f} s; saved to {args.out}")
    return 0


def nano_backbones(args: argparse.Namespace) -> int:
    """Tokenizer and every nano backbone, with a manifest of how they were made and what they score."""
    from .nano.backbones import TINY_BUDGET, BackboneBudget, build_backbones, format_manifest

    budget = TINY_BUDGET if args.tiny else BackboneBudget()
    print(format_manifest(build_backbones(args.out, seed=args.seed, budget=budget, jobs=args.jobs)))
    return 0


def nano_run(args: argparse.Namespace) -> int:
    """The main job: the paper's experiment in miniature, cached and resumable, ending in a report."""
    from .nano.protocol import PRESETS, NanoProtocol, run_protocol

    preset = PRESETS[args.preset]
    protocol = NanoProtocol(
        out=Path(args.out),
        preset=args.preset,
        variants=tuple(args.variants or preset["variants"]),
        seeds=tuple(args.seeds or preset["seeds"]),
        backbones=Path(args.backbones) if args.backbones else None,
        **({"configs": Path(args.configs)} if args.configs else {}),
        check_tolerance=args.tolerance,
        train_perceiver=args.train_perceiver,
        verbose=args.verbose,
    )
    run_protocol(protocol)
    return 0


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None


def build_parser() -> argparse.ArgumentParser:
    from .analysis.speed import PRESETS as BENCH_PRESETS
    from .analysis.speed import BenchSettings
    from .export import PARTS as EXPORT_PARTS
    from .serving.conversation import DEFAULT_FEATURE_CACHE_IMAGES, DEFAULT_MAX_NEW_TOKENS
    from .variants import VARIANTS

    parser = argparse.ArgumentParser(
        prog="prealign", description="Deep Pre-Alignment (DPA) for vision-language models."
    )
    parser.add_argument("--version", action="version", version=f"prealign {__version__}")
    parser.add_argument(
        "--debug", action="store_true", help="show the full traceback of an error, not just its message"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser(
        "smoke",
        help="build tiny random-init models of every variant and check forward, backward, "
        "generation and save/load (no downloads)",
    )
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--new-tokens", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=smoke)

    p = commands.add_parser(
        "train", help="run one training stage from a YAML config (works under torchrun / accelerate launch)"
    )
    p.add_argument(
        "config", help="YAML settings file, or a shipped recipe's name (configs/paper-4b/dpa/stage1.yaml)"
    )
    p.add_argument(
        "overrides", nargs="*", help="key.sub=value overrides, e.g. max_steps=10 data.max_length=2048"
    )
    p.set_defaults(run=train_command)

    p = commands.add_parser(
        "eval", help="answer benchmark files with a saved model and score them (resumes where it stopped)"
    )
    p.add_argument("model", help="a saved model folder (with its processor, as training writes it)")
    p.add_argument("benchmarks", nargs="+", help="benchmark JSON/JSONL files: id, question, answer, scoring")
    p.add_argument("--out", required=True, help="folder for <name>.predictions.jsonl and <name>.scores.json")
    p.add_argument("--image-root", help="folder the items' image paths are relative to (default: the file's)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-new-tokens", type=int, default=32)
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
        "--max-new-tokens", type=int, default=512, help="the longest answer (before VLMEvalKit's args)"
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

    p = commands.add_parser(
        "export",
        help="write a part of a saved model as a standalone HF folder (target-lm: a causal LM; "
        "perceiver: a DPA model's perceiver as a small VLM)",
    )
    p.add_argument("model", help="a saved model folder (with its processor)")
    p.add_argument("out", help="output folder")
    p.add_argument("--part", choices=EXPORT_PARTS, default=EXPORT_PARTS[0])
    p.set_defaults(run=export_command)

    convert = commands.add_parser("convert", help="other layouts as prealign folders").add_subparsers(
        dest="layout", required=True
    )
    p = convert.add_parser(
        "official",
        help="the authors' released DPA (THUMAI-Lab/Deep-Pre-Alignment, e.g. team6013/DPA-4B) as a prealign "
        "folder that loads with AutoModelForImageTextToText and prompts as their evaluation does",
    )
    p.add_argument("source", help="the authors' checkpoint folder (config.json, pytorch_model*.bin)")
    p.add_argument("out", help="output folder")
    for part, what in (
        ("vit", "the Qwen2.5-VL checkpoint whose ViT config it names (perceiver_config.vit_path)"),
        ("llm", "the perceiver LM's config (perceiver_config.llm_path, Qwen3-0.6B)"),
        ("thinker", "the target LM's config (thinker_name_or_path, Qwen3-4B)"),
        ("thinker_tokenizer", "the target's tokenizer (t_tokenizer_name_or_path)"),
        ("perceiver_processor", "the perceiver's processor (p_processor_name_or_path, Qwen2.5-VL's)"),
    ):
        p.add_argument(f"--{part.replace('_', '-')}", help=f"a local folder for {what}; default: as named")
    p.set_defaults(run=convert_official_command)

    def conversation_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="a saved model folder (with its processor)")
        p.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS)
        p.add_argument(
            "--feature-cache-images",
            type=int,
            default=DEFAULT_FEATURE_CACHE_IMAGES,
            help="images whose features are kept for later turns (0: none)",
        )

    p = commands.add_parser("chat", help="talk to a saved model in the terminal (multi-turn, images by path)")
    conversation_arguments(p)
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy decoding")
    p.add_argument("--system", default=None, help="a system message that starts the conversation")
    p.set_defaults(run=chat_command)

    p = commands.add_parser(
        "serve", help="serve a saved model as an OpenAI-compatible /v1/chat/completions endpoint"
    )
    conversation_arguments(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--name", default=None, help="the model's name in the API (default: the folder's name)")
    from .serving.limits import RequestLimits

    limits = RequestLimits()
    p.add_argument(
        "--max-body-mb", type=int, default=limits.max_body_bytes // 2**20, help="request body size"
    )
    p.add_argument(
        "--max-image-pixels", type=int, default=limits.max_image_pixels, help="pixels of one image"
    )
    p.add_argument("--max-images", type=int, default=limits.max_images, help="images in one request")
    p.add_argument(
        "--max-tokens", type=int, default=limits.max_tokens, help="new tokens one request may ask for"
    )
    p.add_argument(
        "--max-queue", type=int, default=limits.max_queue, help="requests admitted at once (then 503)"
    )
    p.add_argument(
        "--timeout", type=float, default=limits.timeout_s, help="seconds a request may wait and generate"
    )
    p.add_argument(
        "--max-batch", type=int, default=limits.max_batch, help="greedy requests answered together"
    )
    p.add_argument(
        "--slice-tokens",
        type=int,
        default=limits.slice_tokens,
        help="new tokens a reply generates before the next gets its turn (0: each runs to its end)",
    )
    p.set_defaults(run=serve_command)

    analyze = commands.add_parser("analyze", help="analyses of a saved model").add_subparsers(
        dest="analyze_command", required=True
    )
    p = analyze.add_parser("cost", help="parameters and forward FLOPs per component (one image, one prompt)")
    p.add_argument("model", help="a saved model folder (with its processor)")
    p.add_argument("--question", default="Describe the image in detail.", help="the prompt's text")
    p.set_defaults(run=cost_command)
    from .analysis.paper_scale import Workload

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
    p.add_argument("--samples", type=int, default=64, help="records to analyse (the first ones)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--names", nargs="+", help="a name per model (default: the folder names)")
    p.add_argument("--out", default="alignment", help="folder for alignment.json and the plots")
    p.set_defaults(run=alignment_command)

    bench_defaults = BenchSettings()
    p = commands.add_parser(
        "bench",
        help="speed side by side: prefill, first token, decode, training step; baseline vs DPA vs Llava",
    )
    p.add_argument(
        "--preset", choices=BENCH_PRESETS, default="tiny", help="models to build (without --models)"
    )
    p.add_argument(
        "--models", nargs="+", help="saved model folders instead of a preset; the first is the reference"
    )
    p.add_argument("--names", nargs="+", help="a name per model folder (default: the folder names)")
    p.add_argument("--repeats", type=int, default=bench_defaults.repeats, help="timed rounds (medians)")
    p.add_argument("--new-tokens", type=int, default=bench_defaults.new_tokens, help="tokens per generate")
    p.add_argument(
        "--train-batch", type=int, default=bench_defaults.train_batch, help="samples per train step"
    )
    p.add_argument("--compile", action="store_true", help="also time generation under torch.compile")
    p.add_argument("--device", default="cpu", help="where every model runs (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument(
        "--attn-implementation",
        choices=["eager", "sdpa", "flash_attention_2", "flex_attention"],
        help="attention for every part of every model (default: each keeps its own)",
    )
    p.add_argument("--json", help="also write the results to this JSON file")
    p.set_defaults(run=bench_command)

    nano = commands.add_parser("nano", help="the nano world").add_subparsers(
        dest="nano_command", required=True
    )
    p = nano.add_parser("data", help="generate the nano world's data sets, benchmarks, corpus and tokenizer")
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=0)
    for name in ("image_size", "pretrain", "instruct", "corpus", "benchmark"):
        p.add_argument(f"--{name.replace('_', '-')}", dest=name, type=int, help="default: see NanoDataSpec")
    p.set_defaults(run=nano_data)
    p = nano.add_parser(
        "run",
        help="the main job: the paper's experiment in miniature (data, the shipped backbones and "
        "perceiver VLM, the baseline and the ablation rows through both stages, benchmarks, analyses, "
        "report)",
    )
    p.add_argument("out", nargs="?", default="runs/nano", help="output folder (default: runs/nano)")
    p.add_argument(
        "--preset",
        choices=["quick", "full"],
        default="quick",
        help="quick: baseline and DPA, one seed (minutes); full: every ablation row, seeds 0,1,2",
    )
    p.add_argument("--seeds", type=_int_list, help="comma-separated seeds (default: the preset's)")
    p.add_argument(
        "--variants", nargs="+", help="the models to train (default: the preset's; baseline needed)"
    )
    p.add_argument("--backbones", help="a folder from `prealign nano backbones` (default: the shipped ones)")
    p.add_argument("--configs", help="the nano recipe's YAML folder (default: the shipped configs/nano)")
    p.add_argument(
        "--tolerance", type=float, default=0.05, help="allowed drift of a re-checked score from the manifest"
    )
    p.add_argument(
        "--train-perceiver",
        action="store_true",
        help="train the perceiver VLM on each seed instead of starting DPA's rows from the shipped one",
    )
    p.add_argument(
        "--verbose", action="store_true", help="each unit's output (Trainer logs, progress bars) shown"
    )
    p.set_defaults(run=nano_run)
    p = nano.add_parser(
        "backbones", help="tokenizer + ViT + perceiver LM + target LM + perceiver VLM, with a manifest"
    )
    p.add_argument("out", help="output folder (finished parts in it are reused)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="smallest sizes and a few steps (tests, smoke runs)")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="parts made at a time, each in its own process (2 on a 2-core CPU)",
    )
    p.set_defaults(run=nano_backbones)
    for name, what in (("pretrain-lm", "a Qwen3 LM on the nano corpus"), ("pretrain-vit", "a SigLIP tower")):
        p = nano.add_parser(name, help=f"pre-train {what} (resumes from its last checkpoint)")
        p.add_argument("data", help="a folder written by `prealign nano data` (for its tokenizer)")
        p.add_argument("--out", required=True)
        p.add_argument("--steps", type=int)
        p.add_argument("--seed", type=int, default=0)
        if name == "pretrain-lm":
            p.add_argument("--size", choices=["tiny", "perceiver", "target"], default="perceiver")
            p.add_argument("--lr", type=float, help="peak learning rate (default: the shipped LM's)")
            p.add_argument(
                "--row-length",
                type=int,
                help="pack each batch's examples into rows of this many tokens: the padded batch's "
                "loss, 1.3-1.6x faster (default: the shipped LMs' 128; 0 pads each batch instead)",
            )
        p.set_defaults(run=nano_pretrain)

    from .data.check import ERROR_CLASSES

    data = commands.add_parser("data", help="data set tools").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("check", help="validate LLaVA-format JSON/JSONL files before training on them")
    p.add_argument("files", nargs="+", help="JSON or JSONL record files")
    p.add_argument(
        "--image-root", help="folder the records' image paths are relative to (default: the file's)"
    )
    p.add_argument(
        "--tokenizer", required=True, help="a tokenizer folder/hub id, or a saved PrealignProcessor"
    )
    p.add_argument("--image-tokens", type=int, help="feature positions per image (N); read from a processor")
    p.add_argument("--max-length", type=int, help="truncation length the training run will use")
    p.add_argument(
        "--format", choices=["chat", "plain"], default="chat", help="plain: LLaVA stage-1 captions"
    )
    p.add_argument(
        "--show", type=int, default=0, metavar="K", help="print K samples with supervised [[spans]]"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument(
        "--allow-outside-root",
        action="store_true",
        help="accept image paths outside --image-root (absolute, ../, symlinks out of it)",
    )
    p.add_argument(
        "--tolerate", nargs="*", default=[], choices=ERROR_CLASSES, help="error classes not to fail on"
    )
    p.set_defaults(run=data_check)
    return parser


# Errors that say what was wrong with the user's input (DataError is a ValueError): their message
# is the whole story, a traceback would bury it.
USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except USER_ERRORS as err:
        if args.debug:
            raise
        print(f"error: {err}\n(prealign --debug ... shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
