"""`tlpo detect`: confusion reports for texts, as JSON lines and optionally an HTML page.

    tlpo detect "안녕하세요 中国 친구" --language ko
    tlpo detect --jsonl texts.jsonl --html spans.html
    cat texts.jsonl | tlpo detect --jsonl - --language fr

Input lines of `--jsonl` are JSON objects with `text` and `language` (`language` may be
left out when `--language` is given). Blank lines are skipped. Each report goes to
stdout as one JSON object per line, in input order.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tlpo.cli import UserError
from tlpo.fileio import write_text_atomically
from tlpo.detection import METHODS, ConfusionReport, detect, pass_rates


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "detect",
        help="find where texts stop being in their target language",
        description="Print a JSON confusion report (passed, first confusion offset, "
        "wrong-language spans, line and word counts) for a text or for each line of a "
        "JSONL file.",
    )
    parser.add_argument("text", nargs="?", help="the text to check (or use --jsonl)")
    parser.add_argument(
        "--language", "-l",
        help="target language code or name (ko, zh-Hans, pt-BR, Japanese); required "
        "with TEXT, and the default for JSONL lines without a `language` field",
    )
    parser.add_argument(
        "--jsonl", metavar="FILE",
        help="read JSON lines with `text` and `language` fields from FILE ('-' for stdin)",
    )
    parser.add_argument(
        "--method", choices=METHODS, default="auto",
        help="auto (default): script rules for own-script targets, word-level language "
        "ID for Latin-script targets; script: script rules only; word-lid: word-level "
        "language ID only",
    )
    english = parser.add_mutually_exclusive_group()
    english.add_argument(
        "--ignore-english", dest="ignore_english", action="store_true", default=True,
        help="script rules skip every ASCII word, so only foreign non-ASCII scripts "
        "count (default)",
    )
    english.add_argument(
        "--no-ignore-english", dest="ignore_english", action="store_false",
        help="script rules also flag English (ASCII) words, except names, units, code "
        "words, URLs and e-mail addresses",
    )
    parser.add_argument(
        "--html", metavar="FILE", type=Path,
        help="also write a self-contained HTML page that marks each wrong-language span",
    )
    parser.add_argument(
        "--summary", action="store_true",
        help="print RPR, LPR and WPR (percent) over all reports as one JSON line on stderr",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.text is not None and args.jsonl is not None:
        raise UserError("give either TEXT or --jsonl FILE, not both")
    if args.text is None and args.jsonl is None:
        raise UserError("nothing to check: give TEXT with --language, or --jsonl FILE")

    if args.text is not None:
        if not args.language:
            raise UserError("--language is required with TEXT, for example --language ko")
        items = [(args.text, args.language, "TEXT")]
    else:
        items = list(_read_jsonl(args.jsonl, args.language))

    reports: list[ConfusionReport] = []
    for text, language, where in items:
        try:
            report = detect(text, language, method=args.method, ignore_english=args.ignore_english)
        except ValueError as error:
            raise UserError(f"{where}: {error}") from None
        reports.append(report)
        sys.stdout.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    sys.stdout.flush()

    if args.html is not None:
        from tlpo.reports import render_detection_page

        _write_atomically(args.html, render_detection_page(reports))
    if args.summary:
        print(json.dumps(pass_rates(reports)), file=sys.stderr)
    return 0


def _read_jsonl(source: str, default_language: str | None):
    """Yield (text, language, location) from a JSONL file or stdin, with clear errors."""
    name = "stdin" if source == "-" else source
    try:
        if source == "-":
            data = sys.stdin.buffer.read()
        else:
            data = Path(source).read_bytes()
    except OSError as error:
        raise UserError(f"cannot read {name}: {error.strerror}") from None
    try:
        content = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UserError(
            f"{name} is not valid UTF-8 (invalid byte at offset {error.start}); re-encode it as UTF-8"
        ) from None

    # Split on "\n" only: a JSON string cannot hold a raw line break, and a trailing
    # "\r" (CRLF files) is JSON whitespace.
    for number, line in enumerate(content.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise UserError(f"{where}: invalid JSON ({error.msg} at column {error.colno})") from None
        if not isinstance(record, dict):
            raise UserError(f"{where}: expected a JSON object with `text` and `language`")
        text = record.get("text")
        if not isinstance(text, str):
            raise UserError(f"{where}: missing or non-string `text` field")
        language = record.get("language", default_language)
        if not isinstance(language, str) or not language:
            raise UserError(f"{where}: missing `language` field; add it or pass --language")
        yield text, language, where


def _write_atomically(path: Path, text: str) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise UserError(f"cannot write {path}: folder {directory} does not exist")
    write_text_atomically(path, text)
