"""`tlpo bench`: run TLPO and the SFT, DPO, ORPO and GRPO baselines side by side."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from tlpo.bench import METHODS
from tlpo.cli import UserError


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="compare TLPO with SFT, DPO, ORPO and GRPO on the embedded default model",
        description="Fine-tune the embedded default model (or --model) with TLPO and each baseline on the "
        "same prompts, for each seed, and report per method: RPR/LPR/WPR per language on held-out "
        "prompts, the capability score, KL from the base model on prompts the base model never got "
        "wrong, wall time, tokens generated and forward passes. Writes results.json, results.md and "
        "results.png to --output-dir. A rerun with the same --output-dir skips finished runs.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one seed (the first of --seeds) and small data and step budgets: under a minute on 2 CPU cores "
        "once the default model is built (building it takes about 5 minutes)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default: 0 1 2)"
    )
    parser.add_argument(
        "--output-dir",
        type=Path,
        default=Path("bench-results"),
        help="folder for the per-run checkpoints and the reports (default: bench-results)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=METHODS,
        default=list(METHODS),
        help="methods to run (default: all); the base model is always measured",
    )
    parser.add_argument(
        "--model",
        type=Path,
        help="model folder with train_prompts.jsonl, eval_prompts.jsonl and probe.jsonl "
        "(default: the embedded default model, built on first use)",
    )
    parser.add_argument(
        "--budget",
        type=Path,
        metavar="FILE.yaml",
        help="YAML mapping of BenchBudget fields (see docs/BENCHMARKS.md) that replace those of the full "
        "or --quick budget, for example learning_rate or dpo: {beta: 0.5}; the defaults are sized for the "
        "embedded default model",
    )
    parser.add_argument(
        "--keep-models",
        action="store_true",
        help="keep every trained model in runs/<method>-seed<seed>/model (default: delete each once measured)",
    )
    parser.add_argument(
        "--threads", type=int, help="torch CPU threads (default: torch's choice, usually one per core)"
    )
    parser.set_defaults(func=run)


def command_line(args, seeds) -> str:
    """Rebuild the command from the parsed options, so results.json records what ran."""
    parts = ["tlpo", "bench"]
    if args.quick:
        parts.append("--quick")
    parts += ["--seeds", *map(str, seeds), "--output-dir", str(args.output_dir)]
    if list(args.methods) != list(METHODS):
        parts += ["--methods", *args.methods]
    if args.model is not None:
        parts += ["--model", str(args.model)]
    if args.budget is not None:
        parts += ["--budget", str(args.budget)]
    if args.keep_models:
        parts.append("--keep-models")
    if args.threads is not None:
        parts += ["--threads", str(args.threads)]
    return " ".join(shlex.quote(part) for part in parts)


def run(args) -> int:
    import torch

    from tlpo.bench import run_bench

    if args.threads is not None:
        if args.threads < 1:
            raise UserError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    seeds = args.seeds[:1] if args.quick else args.seeds
    if len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds has duplicates: {' '.join(map(str, args.seeds))}; give each seed once")
    command = command_line(args, seeds)
    budget = None
    try:
        if args.budget is not None:
            from tlpo.bench import FULL_BUDGET, QUICK_BUDGET, budget_with
            from tlpo.cli import read_yaml_mapping

            overrides = read_yaml_mapping(args.budget, "BenchBudget")
            budget = budget_with(QUICK_BUDGET if args.quick else FULL_BUDGET, overrides)
        results = run_bench(
            args.output_dir, seeds=seeds, quick=args.quick, budget=budget, methods=args.methods,
            model_dir=args.model, command=command, keep_models=args.keep_models,
        )
    except KeyboardInterrupt:
        print(
            f"tlpo bench: finished runs are kept in {args.output_dir}; rerun the same command to resume",
            file=sys.stderr,
        )
        raise
    except (FileNotFoundError, ValueError) as error:
        raise UserError(str(error)) from None

    from tlpo.bench import markdown_table

    print(markdown_table(results))
    for name in ("results.json", "results.md", "results.png"):
        print(f"wrote {args.output_dir / name}")
    return 0
