"""`tlpo lcb generate` and `tlpo lcb run`: write LCB completions, then score them.

`tlpo.cli.lcb` registers these two subcommands beside `score`. `run` scores by parsing
the arguments of `tlpo lcb score` with that command's own parser, so its table is the
one `tlpo lcb score` prints for the written CSV.
"""

from __future__ import annotations

import argparse
import logging

from tlpo.cli import UserError

logger = logging.getLogger(__name__)


def register_generation_commands(lcb_commands) -> None:
    """Add `generate` and `run` to the `tlpo lcb` subparsers (after `score`)."""
    generate = lcb_commands.add_parser(
        "generate",
        help="generate completions for the LCB prompts and write the LCB CSV",
        description=(
            "Read the LCB test_sets folder (monolingual/<source>/<lang>.csv and "
            "crosslingual/<source>/<lang>.csv), put each prompt in a user turn of the "
            "model's chat template, decode greedily and write the CSV columns id, model, "
            "completion, task, source and language that `tlpo lcb score` reads. A rerun "
            "with the same options skips the rows already written, so an interrupted run "
            "can be resumed."
        ),
    )
    add_generation_options(generate)
    generate.set_defaults(func=lambda args: run_generate(args) and 0)

    score_parser = lcb_commands.choices["score"]
    run = lcb_commands.add_parser(
        "run",
        help="generate LCB completions, then score them as `tlpo lcb score` does",
        description=(
            "Run `tlpo lcb generate`, then `tlpo lcb score` on the written CSV with the "
            "scoring options below. The table is identical to scoring the CSV again."
        ),
    )
    add_generation_options(run)
    scoring = run.add_argument_group("scoring (passed to `tlpo lcb score`)")
    scoring.add_argument(
        "--metric",
        choices=("lcb", "rules"),
        default="lcb",
        help="lcb (default): the official LCB metric; rules: RPR/LPR/WPR of the script-rule detector",
    )
    scoring.add_argument(
        "--format",
        choices=("text", "tsv", "json"),
        default="text",
        help="table format: text (default), tsv or json",
    )
    scoring.add_argument("--word-list", metavar="PATH", help="English word list of the LCB data (english_words.txt)")
    scoring.add_argument(
        "--lcb-dir",
        metavar="DIR",
        help="folder of the LCB data, searched for english_words.txt (default: the parent of --test-sets)",
    )
    scoring.add_argument("--lid-model", metavar="PATH", help="fastText language-ID model (default: lid.176.ftz)")
    scoring.add_argument("--table-out", metavar="FILE", help="write the score table to FILE instead of standard output")
    run.set_defaults(func=lambda args: run_generate_and_score(args, score_parser))


def add_generation_options(parser: argparse.ArgumentParser) -> None:
    """Add the options of `tlpo lcb generate` to `parser`."""
    from tlpo.lcb_generation import BACKENDS, DEFAULT_MAX_BATCH_TOKENS, DEFAULT_MAX_NEW_TOKENS, TASKS

    parser.add_argument(
        "--model",
        metavar="PATH",
        help="folder of a saved Hugging Face causal LM with a chat template, or a hub name "
        "already in the local cache (default: the embedded default model, built on first use)",
    )
    parser.add_argument(
        "--test-sets",
        metavar="DIR",
        required=True,
        help="the LCB test_sets folder, containing monolingual/ and crosslingual/",
    )
    parser.add_argument("--out", metavar="FILE.csv", required=True, help="LCB CSV to write or resume")
    parser.add_argument(
        "--task",
        action="append",
        choices=TASKS,
        help="keep only this task; repeat for both (default: both)",
    )
    parser.add_argument(
        "--source",
        action="append",
        metavar="NAME",
        help="keep only this source, by folder (okapi, native) or source column "
        "(native_prompts); repeatable (default: all)",
    )
    parser.add_argument(
        "--language",
        action="append",
        metavar="CODE",
        help="keep only this language file, e.g. ko; repeatable (default: all)",
    )
    parser.add_argument(
        "--max-new-tokens",
        type=int,
        default=DEFAULT_MAX_NEW_TOKENS,
        help=f"maximum new tokens per completion (default: {DEFAULT_MAX_NEW_TOKENS}, as in the LCB release)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per generate call (default: 16)")
    parser.add_argument(
        "--max-batch-tokens",
        type=int,
        default=DEFAULT_MAX_BATCH_TOKENS,
        help="maximum padded tokens per generate call, prompts x (longest prompt + new "
        f"tokens); long prompts get smaller batches (default: {DEFAULT_MAX_BATCH_TOKENS})",
    )
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="transformers",
        help="transformers (default) or vllm (needs the vllm package and a GPU); both write the same columns",
    )
    parser.add_argument(
        "--model-name",
        metavar="NAME",
        help="value of the model column (default: the model folder's name)",
    )
    parser.add_argument(
        "--device",
        default="auto",
        help="torch device for the transformers backend, e.g. cpu or cuda:0 (default: cuda when available)",
    )
    parser.add_argument(
        "--dtype",
        choices=("auto", "float32", "bfloat16", "float16"),
        default="auto",
        help="weight dtype (default: auto, the dtype saved with the model)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def resolve_model_path(model: str | None) -> str:
    """Return `model`, or the embedded default model's folder (building it on first use)."""
    if model:
        return model
    from tlpo.organism import default_model_dir

    return str(default_model_dir())


def run_generate(args: argparse.Namespace) -> dict:
    """Run `tlpo lcb generate` and return its counts (total, generated, reused, complete)."""
    from tlpo.lcb_generation import run_generation

    if args.max_new_tokens < 1:
        raise UserError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {args.batch_size}")
    try:
        counts = run_generation(
            resolve_model_path(args.model),
            args.test_sets,
            args.out,
            tasks=args.task,
            sources=args.source,
            languages=args.language,
            backend=args.backend,
            model_name=args.model_name,
            max_new_tokens=args.max_new_tokens,
            batch_size=args.batch_size,
            max_batch_tokens=args.max_batch_tokens,
            device=args.device,
            dtype=args.dtype,
            progress=not args.no_progress,
        )
    except (FileNotFoundError, ValueError, ImportError) as error:
        raise UserError(str(error)) from None
    logger.info(
        "wrote %s: %d completions (%d generated, %d already there)",
        counts["out"],
        counts["total"],
        counts["generated"],
        counts["reused"],
    )
    return counts


def run_generate_and_score(args: argparse.Namespace, score_parser: argparse.ArgumentParser) -> int:
    """Run `tlpo lcb run`: generate, then score the CSV with `tlpo lcb score`'s own code."""
    from pathlib import Path

    run_generate(args)
    score_argv = [str(args.out), "--metric", args.metric, "--format", args.format]
    lcb_dir = args.lcb_dir or str(Path(args.test_sets).resolve().parent)
    score_argv += ["--lcb-dir", lcb_dir]
    if args.word_list:
        score_argv += ["--word-list", args.word_list]
    if args.lid_model:
        score_argv += ["--lid-model", args.lid_model]
    if args.table_out:
        score_argv += ["--out", args.table_out]
    if args.no_progress:
        score_argv.append("--no-progress")
    score_args = score_parser.parse_args(score_argv)
    score_args.command = args.command
    return score_args.func(score_args)
