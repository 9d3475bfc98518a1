"""Language-confusion metrics: the LCB line and word pass rates, and the same table from
the script-rule detector.

`score_lcb` reproduces the procedure of `compute_metrics.py` from the Language Confusion
Benchmark (Marchisio et al. 2024, arXiv 2406.20052, github.com/for-ai/language-confusion)
step by step, so its LPR and WPR match the official script's output to the printed two
decimals. For each completion:

1. cut the text at the first ``"\\nQ:"`` and strip it;
2. delete every character of `string.punctuation`, replace ``"—"`` by a space and delete
   the Arabic comma ``"،"``;
3. split it into lines on ``"\\n"`` and each line into words (jieba for zh, fugashi with
   unidic-lite and ``-Owakati`` for ja, whitespace otherwise), dropping lines of fewer
   than 5 words;
4. skip a completion with no line left: it counts for nothing;
5. label each line with fastText's top label, or ``unknown`` when its probability is
   0.3 or less. A label other than the target language is a line error;
6. a completion with a line error fails LPR; a completion without one fails WPR when
   one of its words is in the English word list (entries that are all lower-case and
   longer than 3 characters).

LPR = 1 - failed / scored and WPR = 1 - failed / (scored - line-error completions), each
denominator at least 1 as in the official script. WPR is reported only for ar, hi, ja, ko,
ru and zh. Metrics are computed per (task, model, source, language) group. Each
(task, model) block then gets one row per source averaging its languages, one row per
language averaging its sources, and an overall row averaging the per-language rows.
LCPR is the harmonic mean of the LPR and WPR in the same row.

All averaging runs on fractions in the official order, and rows store percentages
(fraction * 100) only at the end, so the printed two decimals are the official ones.
"""

from __future__ import annotations

import dataclasses
import os
import string
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

# Languages for which the official script reports WPR; for Latin-script languages the
# English word list gives false hits on shared words, so WPR is left undefined there.
WPR_LANGUAGES = frozenset({"ar", "hi", "ja", "ko", "ru", "zh"})
MIN_LINE_WORDS = 5
LID_THRESHOLD = 0.3
UNKNOWN_LABEL = "unknown"
ALL = "all"

WORD_LIST_NAME = "english_words.txt"
WORD_LIST_ENV = "TLPO_LCB_WORDS"
LCB_DIR_ENV = "TLPO_LCB_DIR"

_PUNCTUATION_TABLE = str.maketrans("", "", string.punctuation)


class WordListNotFoundError(FileNotFoundError):
    """The English word list of the LCB release was not found in any searched place."""


# --- steps of the per-completion procedure ------------------------------------------


def normalize_completion(text: str) -> str:
    """Apply LCB steps 1 and 2: cut at the first "\\nQ:", strip, remove punctuation."""
    text = text.split("\nQ:", 1)[0].strip()
    text = text.translate(_PUNCTUATION_TABLE)
    text = text.replace("—", " ")
    return text.replace("،", "")


_japanese_tagger = None
_jieba = None


def _split_chinese(line: str) -> list[str]:
    global _jieba
    if _jieba is None:
        import logging

        import jieba

        # jieba logs the dictionary load at DEBUG level through its own handler.
        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    # The default (precise, HMM) mode of jieba 0.42.1. Spaces and tabs come back as
    # words of their own, and they count towards the 5-word minimum as in the official script.
    return list(_jieba.cut(line))


def _split_japanese(line: str) -> list[str]:
    global _japanese_tagger
    if _japanese_tagger is None:
        import fugashi

        # fugashi.Tagger finds the unidic-lite dictionary when that package is installed.
        _japanese_tagger = fugashi.Tagger("-Owakati")
    return _japanese_tagger.parse(line).split()


def split_words(line: str, language: str) -> list[str]:
    """Split one line into words the way the LCB metric does for `language`.

    Chinese (zh) goes through jieba, Japanese (ja) through fugashi with unidic-lite, and
    every other language is split on whitespace.
    """
    if language == "zh":
        return _split_chinese(line)
    if language == "ja":
        return _split_japanese(line)
    return line.split()


def scored_lines(completion: str, language: str) -> list[tuple[str, list[str]]]:
    """Return the (line, words) pairs of `completion` that the LCB metric labels.

    These are the lines of the normalized text with at least 5 words. An empty list means
    the metric skips the completion.
    """
    pairs = []
    for line in normalize_completion(completion).split("\n"):
        words = split_words(line, language)
        if len(words) >= MIN_LINE_WORDS:
            pairs.append((line, words))
    return pairs


def make_line_labeler(model) -> Callable[[str], str]:
    """Return a function that labels one line with `model`'s top fastText label.

    The label loses its ``__label__`` prefix and becomes ``unknown`` when the top
    probability is 0.3 or less.
    """
    predict = model.f.predict  # the C++ binding: one line, returns [(probability, label)]

    def label_line(line: str) -> str:
        # The Python wrapper adds this newline too. Its list form cannot be used
        # because fasttext-predict 0.9.2.4 returns labels without probabilities there.
        predictions = predict(line + "\n", 1, 0.0, "strict")
        if not predictions:
            return UNKNOWN_LABEL
        probability, label = predictions[0]
        if probability <= LID_THRESHOLD:
            return UNKNOWN_LABEL
        return label.removeprefix("__label__")

    return label_line


# --- the English word list -----------------------------------------------------------


def load_english_words(path: str | os.PathLike) -> frozenset[str]:
    """Read the LCB English word list, keeping entries all lower-case and longer than 3."""
    with open(path, encoding="utf-8") as handle:
        words = (line.strip() for line in handle)
        return frozenset(word for word in words if word.islower() and len(word) > 3)


def word_list_candidates(
    word_list: str | os.PathLike | None = None,
    *,
    lcb_dir: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
) -> list[tuple[Path, str]]:
    """List the places searched for the English word list, in order, with their origin.

    The order is: the explicit `word_list`, the `TLPO_LCB_WORDS` variable, `lcb_dir` (or
    the `TLPO_LCB_DIR` variable), the input file's folder and its parent (an LCB
    checkout keeps completions in `outputs/` and the list at its root), then the current
    folder.
    """
    if word_list is not None:
        return [(Path(word_list), "--word-list")]
    candidates: list[tuple[Path, str]] = []
    if os.environ.get(WORD_LIST_ENV):
        candidates.append((Path(os.environ[WORD_LIST_ENV]), f"${WORD_LIST_ENV}"))
    if lcb_dir is not None:
        candidates.append((Path(lcb_dir) / WORD_LIST_NAME, "--lcb-dir"))
    elif os.environ.get(LCB_DIR_ENV):
        candidates.append((Path(os.environ[LCB_DIR_ENV]) / WORD_LIST_NAME, f"${LCB_DIR_ENV}"))
    if input_path is not None:
        folder = Path(input_path).resolve().parent
        candidates.append((folder / WORD_LIST_NAME, "input folder"))
        candidates.append((folder.parent / WORD_LIST_NAME, "input folder's parent"))
    candidates.append((Path.cwd() / WORD_LIST_NAME, "current folder"))
    return candidates


def find_word_list(
    word_list: str | os.PathLike | None = None,
    *,
    lcb_dir: str | os.PathLike | None = None,
    input_path: str | os.PathLike | None = None,
) -> Path:
    """Return the first existing file among `word_list_candidates`.

    Raises WordListNotFoundError listing every searched path and how to get the file.
    """
    candidates = word_list_candidates(word_list, lcb_dir=lcb_dir, input_path=input_path)
    for path, _origin in candidates:
        if path.is_file():
            return path
    searched = "\n".join(f"  {path} ({origin})" for path, origin in candidates)
    raise WordListNotFoundError(
        f"English word list not found. Searched:\n{searched}\n"
        f"The LCB word-level metric needs {WORD_LIST_NAME}, the English word list that "
        "ships with the Language Confusion Benchmark data "
        "(github.com/for-ai/language-confusion). Pass its path with --word-list PATH, "
        f"set {WORD_LIST_ENV}=PATH, or point --lcb-dir (or {LCB_DIR_ENV}) at the folder "
        "that contains it."
    )


# --- reading completion files --------------------------------------------------------

REQUIRED_COLUMNS = ("completion", "task", "source", "language")


class InputError(ValueError):
    """A completion file that cannot be scored; the message names the file, row and fix."""


def _decode(data: bytes, name: str) -> str:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(
            f"{name} is not valid UTF-8: byte 0x{data[error.start]:02x} at offset "
            f"{error.start} (line {line}) cannot be decoded. Save the file as UTF-8 and "
            "retry."
        ) from None
    # Python's universal-newline reading, which the official script gets from open():
    # "\r\n" and a lone "\r" become "\n", also inside quoted CSV fields.
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _check_value(value, column: str, where: str, *, allow_empty: bool) -> str:
    if value is None:
        raise InputError(f"{where}: missing value for column {column!r}")
    if not isinstance(value, str):
        raise InputError(
            f"{where}: column {column!r} must be a string, got {type(value).__name__} "
            f"{value!r}"
        )
    if not allow_empty and not value.strip():
        raise InputError(f"{where}: column {column!r} is empty")
    return value


def _missing_columns_error(name: str, missing: Sequence[str], found: Iterable[str]) -> InputError:
    return InputError(
        f"{name} lacks the column(s) {', '.join(map(repr, missing))}; found "
        f"{', '.join(map(repr, found)) or 'none'}. An LCB completion file has the columns "
        f"{', '.join(REQUIRED_COLUMNS)} and optionally model."
    )


def _read_csv(text: str, name: str, default_model: str) -> list[Completion]:
    import csv
    import io

    rows = []
    previous_limit = csv.field_size_limit()
    # The default limit of 128 KiB per field would reject long completions.
    csv.field_size_limit(2**31 - 1)
    try:
        reader = csv.DictReader(io.StringIO(text))
        header = reader.fieldnames or []
        missing = [column for column in REQUIRED_COLUMNS if column not in header]
        if missing:
            raise _missing_columns_error(name, missing, header)
        for record in reader:
            where = f"{name}, line {reader.line_num}"
            values = {
                column: _check_value(
                    record.get(column), column, where, allow_empty=column == "completion"
                )
                for column in REQUIRED_COLUMNS
            }
            model = record.get("model") or default_model
            rows.append(Completion(model=model, **values))
    except csv.Error as error:
        raise InputError(f"{name}: invalid CSV near line {reader.line_num}: {error}") from None
    finally:
        csv.field_size_limit(previous_limit)
    return rows


def _read_jsonl(text: str, name: str, default_model: str) -> list[Completion]:
    import json

    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        where = f"{name}, line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(f"{where}: invalid JSON: {error}") from None
        if not isinstance(record, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(record).__name__}")
        missing = [column for column in REQUIRED_COLUMNS if column not in record]
        if missing:
            raise _missing_columns_error(where, missing, record)
        values = {
            column: _check_value(
                record[column], column, where, allow_empty=column == "completion"
            )
            for column in REQUIRED_COLUMNS
        }
        # Escaped line ends inside JSON strings get the same treatment as raw ones in CSV.
        values["completion"] = values["completion"].replace("\r\n", "\n").replace("\r", "\n")
        try:
            values["completion"].encode("utf-8")
        except UnicodeEncodeError as error:
            raise InputError(
                f"{where}: the completion contains an unpaired surrogate "
                f"{values['completion'][error.start]!r} (an escape such as \\ud800 in the "
                "JSON); fix the escape in the file that produced it"
            ) from None
        model = record.get("model")
        if model is not None:
            model = _check_value(model, "model", where, allow_empty=False)
        rows.append(Completion(model=model or default_model, **values))
    return rows


def read_completions(path: str | os.PathLike, *, data: bytes | None = None) -> list[Completion]:
    """Read an LCB completion file: CSV, or JSON Lines when it is named *.jsonl/*.json.

    Required columns (keys) are completion, task, source and language; a missing model
    column becomes the file name without its suffix. Empty completions are kept (the
    metric skips them). Raises InputError on invalid UTF-8, a missing column or value, a
    malformed row, or a file with no completion. Pass `data` to parse bytes already
    read (for standard input), with `path` naming them.
    """
    path = Path(path)
    name = str(path)
    if data is None:
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"completion file not found: {name}") from None
        except IsADirectoryError:
            raise InputError(f"{name} is a folder; pass a CSV or JSONL file") from None
    text = _decode(data, name)
    default_model = path.stem
    if path.suffix.lower() in (".jsonl", ".json", ".ndjson") or (
        path.suffix.lower() != ".csv" and text.lstrip().startswith("{")
    ):
        rows = _read_jsonl(text, name, default_model)
    else:
        rows = _read_csv(text, name, default_model)
    if not rows:
        raise InputError(f"{name} contains no completions")
    return rows


def resolve_languages(rows: Sequence[Completion]) -> list[Completion]:
    """Return `rows` with each language replaced by its canonical lid.176 code.

    Codes the fastText model already uses as labels stay as they are, so LCB files
    score exactly as with the official script. Others ("ko-KR", "zh-Hans",
    "Japanese") go through `tlpo.languages.normalize_language`. Raises InputError
    naming an unknown code and how many rows carry it.
    """
    from tlpo.languages import LID176_CODES, normalize_language

    mapping = {}
    for code in sorted({row.language for row in rows}):
        if code in LID176_CODES:
            mapping[code] = code
            continue
        try:
            mapping[code] = normalize_language(code)
        except ValueError as error:
            count = sum(row.language == code for row in rows)
            raise InputError(f"{error} (in {count} row(s) of the language column)") from None
    return [dataclasses.replace(row, language=mapping[row.language]) for row in rows]


# --- scoring -------------------------------------------------------------------------


@dataclass
class GroupCounts:
    """Completion counts of one (task, model, source, language) group."""

    completions: int = 0
    scored: int = 0  # completions with at least one line of 5+ words
    line_errors: int = 0  # scored completions with a line in another language
    word_errors: int = 0  # scored completions without line errors but with an English word


@dataclass
class MetricRow:
    """One row of a metric table; rates are percentages, None where undefined.

    `source` or `language` is "all" in the average rows. For the LCB metric `rpr` is None;
    for the rule metric `lcpr` is None. Counts in average rows are sums over the groups
    they average.
    """

    task: str
    model: str
    source: str
    language: str
    lpr: float | None
    wpr: float | None
    lcpr: float | None = None
    rpr: float | None = None
    completions: int = 0
    scored: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Completion:
    """One input row: a completion with the labels the metric groups by."""

    completion: str
    task: str
    source: str
    language: str
    model: str


def score_group(
    completions: Iterable[str],
    language: str,
    *,
    label_line: Callable[[str], str],
    english_words: frozenset[str],
) -> GroupCounts:
    """Count line and word errors over the completions of one group (LCB steps 1-6)."""
    counts = GroupCounts()
    check_words = language in WPR_LANGUAGES
    for completion in completions:
        counts.completions += 1
        lines = scored_lines(completion, language)
        if not lines:
            continue
        counts.scored += 1
        if any(label_line(line) != language for line, _words in lines):
            counts.line_errors += 1
        elif check_words and any(
            word.strip() in english_words for _line, words in lines for word in words
        ):
            counts.word_errors += 1
    return counts


def group_rates(counts: GroupCounts, language: str) -> dict[str, float]:
    """Return {"lpr": ..., "wpr": ...} as fractions; "wpr" only for WPR languages."""
    rates = {"lpr": 1 - counts.line_errors / max(1, counts.scored)}
    if language in WPR_LANGUAGES:
        rates["wpr"] = 1 - counts.word_errors / max(1, counts.scored - counts.line_errors)
    return rates


def harmonic_mean(a: float | None, b: float | None) -> float | None:
    """Return 2ab / (a + b), 0 when both are 0, None when either is undefined."""
    if a is None or b is None:
        return None
    if a + b == 0:
        return 0.0
    return 2 * a * b / (a + b)


def _average(rates: Sequence[Mapping[str, float | None]], keys: Sequence[str]) -> dict:
    averages = {}
    for key in keys:
        values = [r[key] for r in rates if r.get(key) is not None]
        if values:
            averages[key] = sum(values) / len(values)
    return averages


def _sum_counts(counts: Iterable[GroupCounts]) -> GroupCounts:
    total = GroupCounts()
    for item in counts:
        total.completions += item.completions
        total.scored += item.scored
        total.line_errors += item.line_errors
        total.word_errors += item.word_errors
    return total


def aggregate_rows(
    groups: Mapping[tuple[str, str], tuple[Mapping[str, float], GroupCounts]],
    keys: Sequence[str],
) -> list[tuple[str, str, dict, GroupCounts]]:
    """Add the "all" rows to per-(source, language) rates, in the official row order.

    `groups` maps (source, language) to (rates as fractions, counts). The result lists
    (source, language, rates, counts) in this order. First come the groups sorted by
    (source, language), then one row per source in sorted order. Then follows one row per
    language, in the order each first appears among the sorted groups, and last
    ("all", "all"), which averages the language rows.
    """
    rows = []
    per_source: dict[str, list] = defaultdict(list)
    per_language: dict[str, list] = defaultdict(list)
    for source, language in sorted(groups):
        rates, counts = groups[(source, language)]
        rows.append((source, language, dict(rates), counts))
        per_source[source].append((rates, counts))
        per_language[language].append((rates, counts))

    for source, items in per_source.items():
        rates = _average([r for r, _c in items], keys)
        rows.append((source, ALL, rates, _sum_counts(c for _r, c in items)))
    language_rows = []
    for language, items in per_language.items():
        rates = _average([r for r, _c in items], keys)
        counts = _sum_counts(c for _r, c in items)
        language_rows.append((rates, counts))
        rows.append((ALL, language, rates, counts))
    overall = _average([r for r, _c in language_rows], keys)
    rows.append((ALL, ALL, overall, _sum_counts(c for _r, c in language_rows)))
    return rows


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def _blocks(rows: Sequence[Completion]):
    """Yield ((task, model), {(source, language): [completion, ...]}) sorted by block."""
    blocks: dict[tuple[str, str], dict[tuple[str, str], list[str]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for row in rows:
        blocks[(row.task, row.model)][(row.source, row.language)].append(row.completion)
    for key in sorted(blocks):
        yield key, blocks[key]


def score_lcb(
    rows: Sequence[Completion],
    *,
    english_words: frozenset[str],
    lid_model=None,
    progress: bool | None = None,
) -> list[MetricRow]:
    """Score completions with the LCB metric; return the table in the official row order.

    `lid_model` is a loaded fastText model (default: `tlpo.lid.load_model()`, which reads
    `lid.176.ftz`). `language` values must be the fastText labels of the target
    languages (en, fr, zh, ...). `progress` shows a tqdm bar over the groups (None: only
    on a terminal).
    """
    from tqdm.auto import tqdm

    if lid_model is None:
        from tlpo.lid import load_model

        lid_model = load_model()
    label_line = make_line_labeler(lid_model)

    blocks = list(_blocks(rows))
    bar = tqdm(
        total=sum(len(groups) for _key, groups in blocks),
        desc="LCB groups",
        unit="group",
        disable=None if progress is None else not progress,
    )
    table = []
    with bar:
        for (task, model), groups in blocks:
            results = {}
            for (source, language), completions in sorted(groups.items()):
                counts = score_group(
                    completions, language, label_line=label_line, english_words=english_words
                )
                results[(source, language)] = (group_rates(counts, language), counts)
                bar.update()
            for source, language, rates, counts in aggregate_rows(results, ("lpr", "wpr")):
                lpr = _percent(rates.get("lpr"))
                wpr = _percent(rates.get("wpr"))
                table.append(
                    MetricRow(
                        task=task,
                        model=model,
                        source=source,
                        language=language,
                        lpr=lpr,
                        wpr=wpr,
                        lcpr=harmonic_mean(lpr, wpr),
                        completions=counts.completions,
                        scored=counts.scored,
                    )
                )
    return table


def score_rules(
    rows: Sequence[Completion],
    *,
    progress: bool | None = None,
    **detector_options,
) -> list[MetricRow]:
    """Score completions with the script-rule detector: RPR, LPR and WPR per group.

    Each completion is cut at the first "\\nQ:" and stripped, as in the LCB metric, then
    passed unchanged to `tlpo.detection.detect_batch` with `detector_options`. The groups,
    "all" rows and averaging follow `score_lcb`. Every completion counts (none is
    skipped), so `scored` equals `completions`.
    """
    from tqdm.auto import tqdm

    from tlpo.detection import detect_batch, pass_rates

    blocks = list(_blocks(rows))
    bar = tqdm(
        total=sum(len(groups) for _key, groups in blocks),
        desc="rule groups",
        unit="group",
        disable=None if progress is None else not progress,
    )
    table = []
    keys = ("rpr", "lpr", "wpr")
    with bar:
        for (task, model), groups in blocks:
            results = {}
            for (source, language), completions in sorted(groups.items()):
                texts = [c.split("\nQ:", 1)[0].strip() for c in completions]
                reports = detect_batch(texts, language, **detector_options)
                # pass_rates gives percentages; the averaging below expects fractions.
                rates = {
                    key: None if value is None else value / 100
                    for key, value in pass_rates(reports).items()
                    if key in keys
                }
                count = len(completions)
                results[(source, language)] = (rates, GroupCounts(count, count))
                bar.update()
            for source, language, rates, counts in aggregate_rows(results, keys):
                table.append(
                    MetricRow(
                        task=task,
                        model=model,
                        source=source,
                        language=language,
                        rpr=_percent(rates.get("rpr")),
                        lpr=_percent(rates.get("lpr")),
                        wpr=_percent(rates.get("wpr")),
                        completions=counts.completions,
                        scored=counts.scored,
                    )
                )
    return table

