"""`tlpo organism`: build and measure the embedded default model.

`tlpo organism build` trains the small multilingual chat model that every command uses
when given no model; `tlpo organism evaluate` prints its language consistency (RPR at a
sampling temperature and greedy) and its probe score. Heavy imports happen inside the
command functions, because `tlpo --help` imports every command module.
"""

from __future__ import annotations

import json
from pathlib import Path

from tlpo.cli import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "organism",
        help="build or evaluate the embedded default model",
        description=(
            "The embedded default model: a small Llama chat model trained from scratch on "
            "CPU on Django's translation catalogs, translating English UI strings into 8 "
            "languages, with language drift in a known share of its training answers."
        ),
    )
    commands = parser.add_subparsers(dest="organism_command", metavar="ORGANISM_COMMAND", required=True)

    build = commands.add_parser(
        "build",
        help="train the model and save a Hugging Face model folder",
        description=(
            "Train the tokenizer and model and save config.json, model.safetensors, the "
            "tokenizer with its chat template, generation_config.json, the prompt sets "
            "(train_prompts.jsonl, eval_prompts.jsonl, probe.jsonl) and build_manifest.json. "
            "Without --out the model goes to the cache that commands use by default."
        ),
    )
    build.add_argument("--out", type=Path, help="output folder; must not exist or be empty (default: the cache under $TLPO_HOME, else ~/.cache/tlpo)")
    build.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same model.safetensors bytes (default: 0)")
    build.add_argument("--size", choices=("small", "tiny"), default="small", help="small: the default model, about 1.3 M parameters; tiny: a few seconds' build for tests (default: small)")
    build.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    build.set_defaults(func=_build)

    evaluate = commands.add_parser(
        "evaluate",
        help="print per-language RPR (sampled and greedy) and the probe score",
        description=(
            "Sample answers to the model folder's held-out prompts (eval_prompts.jsonl) and "
            "report the response pass rate (RPR, percent of answers with no wrong-language "
            "word, by tlpo.detection with default options) per language, at the sampling "
            "temperature and greedy, and the probe score (chrF and exact match of line 1 "
            "against probe.jsonl, greedy)."
        ),
    )
    evaluate.add_argument("--model", type=Path, help="model folder with eval_prompts.jsonl and probe.jsonl (default: the embedded model, built on first use)")
    evaluate.add_argument("--temperature", type=float, default=0.7, help="sampling temperature for the sampled RPR (default: 0.7)")
    evaluate.add_argument("--samples", type=int, default=4, help="answers sampled per prompt (default: 4)")
    evaluate.add_argument("--max-new-tokens", type=int, default=96, help="maximum new tokens per response (default: 96)")
    evaluate.add_argument("--batch-size", type=int, default=64, help="prompts per generate call (default: 64)")
    evaluate.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    evaluate.add_argument("--output", type=Path, help="also write the results as JSON to this file")
    evaluate.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    evaluate.set_defaults(func=_evaluate)


def _build(args) -> int:
    from tlpo.organism import build_organism, default_model_dir

    if args.out is None:
        folder = default_model_dir(seed=args.seed, size=args.size, progress=not args.no_progress)
    else:
        try:
            folder = build_organism(args.out, seed=args.seed, size=args.size, progress=not args.no_progress)
        except FileExistsError as error:
            raise UserError(str(error)) from error
    manifest = json.loads((folder / "build_manifest.json").read_text(encoding="utf-8"))
    print(f"{folder}  ({manifest['parameters']:,} parameters, built in {manifest['metrics']['build_seconds']:.0f} s)")
    return 0


def _evaluate(args) -> int:
    from tlpo.organism import evaluate_organism, format_evaluation, write_json

    if args.model is not None and not args.model.is_dir():
        raise UserError(f"model folder {args.model} not found; pass a folder written by `tlpo organism build`")
    if args.samples < 1 or args.batch_size < 1 or args.max_new_tokens < 1:
        raise UserError("--samples, --batch-size and --max-new-tokens must be at least 1")
    if args.temperature <= 0:
        raise UserError(f"invalid --temperature {args.temperature}; it must be positive (greedy is always reported too)")
    try:
        result = evaluate_organism(
            args.model,
            temperature=args.temperature,
            num_samples=args.samples,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            seed=args.seed,
            progress=not args.no_progress,
        )
    except FileNotFoundError as error:
        raise UserError(str(error)) from error
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.output, result)
    print(json.dumps(result, indent=2, ensure_ascii=False) if args.json else format_evaluation(result))
    return 0
