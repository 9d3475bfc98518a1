"""How well `tlpo.detection.detect` localises confusion: a splice benchmark on LCB prompts.

For each monolingual prompt of the Language Confusion Benchmark, the script

1. runs the detector on the clean prompt: a report that does not pass is a *false flag*;
2. splices a foreign segment into the prompt at a word boundary chosen at random, and
   counts a *hit* when the detector's first confusion point falls inside the first word
   of the spliced segment.

Foreign segments are the first words of prompts of another language of the same
benchmark: English into every non-English target, French into English, and one
foreign-script pair per own-script target (Han into ko, Hangul into zh and ja,
Cyrillic into ar, Arabic into ru, Han into hi).

Clear boundaries: this check applies when target and source are both Latin-script
languages. A segment qualifies only when its first word is not a word of the target
language, and a splice point only when the word before it is not a word of the source
language. "A word of a
language" means a lower-cased word used by at least two of that language's LCB prompts
(`corpus_lexicon`), so the check does not depend on the detector. Without it, an
English segment starting with "A" in Portuguese or "In" in German, or a splice after a
French "comment", has no single right answer for its first foreign word.
`--any-boundary` turns the check off.

Detector options: the English splices into own-script targets run with
`ignore_english=False`, because the default `ignore_english=True` skips every ASCII
word and so could never find them. Their false-flag column is measured with the same
option. All other rows use the defaults (`method="auto"`, `ignore_english=True`).

Run from the repository root:

    python benchmarks/localisation.py --per-language 100

`--lcb-dir` points at the LCB release (default: `shared/lcb` beside the checkout).

It prints a table (Markdown with `--markdown`) and exits with status 1 when a row
misses its floor: >= 95% hits and <= 2% false flags for own-script targets,
>= 85% hits and <= 5% false flags for Latin-script targets.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import regex

from tlpo.detection import detect
from tlpo.languages import is_latin_script, language_scripts

# (target, source of the foreign segment). English goes into every other target.
SCRIPT_PAIRS = [("ko", "zh"), ("zh", "ko"), ("ja", "ko"), ("ar", "ru"), ("ru", "ar"), ("hi", "zh")]
ENGLISH_SOURCE_FOR_ENGLISH = "fr"

FLOORS = {False: (95.0, 2.0), True: (85.0, 5.0)}  # is_latin -> (min hit %, max false-flag %)

SEGMENT_WORDS = 6  # words taken from a space-separated source prompt
SEGMENT_CHARACTERS = 8  # characters taken from a Chinese or Japanese source prompt

_NO_SPACE_LANGUAGES = {"zh", "ja"}

# A word belongs to a language's lexicon when at least this many of its prompts use it.
LEXICON_MIN_PROMPTS = 2


@dataclass
class Case:
    language: str
    source: str
    clean: str
    spliced: str
    segment_start: int
    first_word_end: int
    ignore_english: bool


def load_prompts(lcb_dir: Path) -> dict[str, list[str]]:
    """Read the monolingual LCB prompts, grouped by language, in file order."""
    prompts: dict[str, list[str]] = defaultdict(list)
    for path in sorted((lcb_dir / "test_sets" / "monolingual").glob("*/*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle):
                prompts[row["language"]].append(row["prompt"])
    if not prompts:
        raise SystemExit(f"no monolingual prompts found under {lcb_dir}/test_sets/monolingual")
    return prompts


def make_segment(prompt: str, source: str) -> tuple[str, int] | None:
    """Cut a foreign segment from a source prompt; return it and the end of its first word.

    The segment starts at the prompt's first letter and stays on one line. For Chinese
    and Japanese the first word is taken to be the first character, the shortest
    reading, so a hit there is strict.
    """
    line = prompt.strip().split("\n")[0]
    # Start at the first letter of the source's own script, so that a Chinese prompt
    # beginning with "PUA" gives a Han segment.
    scripts = "".join(rf"\p{{Script={name}}}" for name in language_scripts(source))
    letter = regex.search(rf"[{scripts}]", line)
    if letter is None:
        return None
    line = line[letter.start() :]
    if source in _NO_SPACE_LANGUAGES:
        segment = line[:SEGMENT_CHARACTERS]
        return (segment, 1) if len(segment) >= 2 else None
    words = line.split()[:SEGMENT_WORDS]
    if len(words) < 2:
        return None
    segment = " ".join(words)
    return segment, len(words[0])


def splice(
    prompt: str, segment: str, language: str, rng: random.Random, avoid_after: frozenset[str] = frozenset()
) -> tuple[str, int]:
    """Insert segment into prompt at a random word boundary; return the text and the segment's offset.

    Boundaries right after a word in `avoid_after` are not used, unless no other is left.
    """
    if language in _NO_SPACE_LANGUAGES:
        # Any boundary between two characters of the first line, or its start.
        # Any boundary of the first line that does not touch a Latin letter or a digit, so
        # the segment does not merge with a neighbouring word ("AED" + "How").
        first_line_end = prompt.find("\n") if "\n" in prompt else len(prompt)
        boundaries = [
            i
            for i in range(first_line_end + 1)
            if not (i > 0 and _is_latin_or_digit(prompt[i - 1])) and not (i < len(prompt) and _is_latin_or_digit(prompt[i]))
        ]
        position = rng.choice(boundaries or [0])
        return prompt[:position] + segment + prompt[position:], position
    boundaries = [0] + [m.end() for m in regex.finditer(r"[^\S\n]+", prompt)]
    if avoid_after:
        clear = [b for b in boundaries if _last_word(prompt[max(0, b - 40) : b]) not in avoid_after]
        boundaries = clear or boundaries
    position = rng.choice(boundaries)
    text = prompt[:position] + segment + " " + prompt[position:]
    return text, position


def _is_latin_or_digit(char: str) -> bool:
    return char.isascii() and char.isalnum()


_WORD = regex.compile(r"[\p{L}\p{M}]+(?:['’-][\p{L}\p{M}]+)*")


def corpus_lexicon(prompts: list[str], min_prompts: int = LEXICON_MIN_PROMPTS) -> frozenset[str]:
    """Return the lower-cased words that occur in at least `min_prompts` of the given prompts."""
    counts: dict[str, int] = defaultdict(int)
    for prompt in prompts:
        for word in {w.lower() for w in _WORD.findall(prompt)}:
            counts[word] += 1
    return frozenset(word for word, count in counts.items() if count >= min_prompts)


def _first_word(text: str) -> str:
    match = _WORD.search(text)
    return match.group().lower() if match else ""


def _last_word(text: str) -> str:
    words = _WORD.findall(text)
    return words[-1].lower() if words else ""


def build_cases(
    prompts: dict[str, list[str]], per_language: int, seed: int = 0, clear_boundaries: bool = True
) -> list[Case]:
    """Build clean and spliced cases: up to `per_language` prompts per (target, source) row.

    With `clear_boundaries` (the default), a splice between two Latin-script languages
    uses only segments whose first word is not a word of the target language. It also
    uses only positions whose preceding word is not a word of the source language. Both
    checks use `corpus_lexicon` of that language's prompts. Without them the boundary
    can be ambiguous by construction: "A" and "In" start English segments and are
    Portuguese and German words too, so the segment's first word is no single answer.
    """
    rng = random.Random(seed)
    rows = [(language, "en" if language != "en" else ENGLISH_SOURCE_FOR_ENGLISH) for language in sorted(prompts)]
    rows += [pair for pair in SCRIPT_PAIRS if pair[0] in prompts and pair[1] in prompts]
    lexicons: dict[str, frozenset[str]] = {}
    cases = []
    for language, source in rows:
        ignore_english = not (source == "en" and not is_latin_script(language))
        targets = list(prompts[language])
        rng.shuffle(targets)
        sources = [s for s in (make_segment(p, source) for p in prompts[source]) if s is not None]
        source_lexicon: frozenset[str] = frozenset()
        if clear_boundaries and is_latin_script(language) and is_latin_script(source):
            for code in (language, source):
                if code not in lexicons:
                    lexicons[code] = corpus_lexicon(prompts[code])
            sources = [s for s in sources if _first_word(s[0]) not in lexicons[language]]
            source_lexicon = lexicons[source]
        for prompt in targets[:per_language]:
            segment, first_word_length = rng.choice(sources)
            spliced, start = splice(prompt, segment, language, rng, avoid_after=source_lexicon)
            cases.append(Case(language, source, prompt, spliced, start, start + first_word_length, ignore_english))
    return cases


def evaluate(cases: list[Case], progress: bool = False) -> list[dict]:
    """Run the detector on every case; return one result row per (target, source)."""
    groups: dict[tuple[str, str], list[Case]] = defaultdict(list)
    for case in cases:
        groups[(case.language, case.source)].append(case)
    iterator = groups.items()
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="rows", unit="row", file=sys.stderr)
    results = []
    for (language, source), group in iterator:
        hits = false_flags = 0
        for case in group:
            clean = detect(case.clean, language, ignore_english=case.ignore_english)
            false_flags += not clean.passed
            spliced = detect(case.spliced, language, ignore_english=case.ignore_english)
            point = spliced.first_confusion
            hits += point is not None and case.segment_start <= point < case.first_word_end
        latin = is_latin_script(language)
        min_hits, max_false = FLOORS[latin]
        hit_rate = 100.0 * hits / len(group)
        false_rate = 100.0 * false_flags / len(group)
        results.append(
            {
                "language": language,
                "splice": f"{source}->{language}",
                "script": "Latin" if latin else "own",
                "ignore_english": group[0].ignore_english,
                "prompts": len(group),
                "hit_pct": hit_rate,
                "false_flag_pct": false_rate,
                "meets_floor": hit_rate >= min_hits and false_rate <= max_false,
            }
        )
    return results


def format_table(results: list[dict], markdown: bool) -> str:
    header = ["language", "splice", "script", "ignore_english", "prompts", "hit %", "false flag %", "floor"]
    lines = []
    body = [
        [
            r["language"],
            r["splice"],
            r["script"],
            str(r["ignore_english"]),
            str(r["prompts"]),
            f"{r['hit_pct']:.1f}",
            f"{r['false_flag_pct']:.1f}",
            "met" if r["meets_floor"] else "MISSED",
        ]
        for r in results
    ]
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join(" --- " for _ in header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(h), *(len(row[i]) for row in body)) for i, h in enumerate(header)]
        lines.append("  ".join(h.ljust(w) for h, w in zip(header, widths)))
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in body]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lcb-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "lcb",
                        help="folder of the LCB release, which contains test_sets/monolingual")
    parser.add_argument("--per-language", type=int, default=100,
                        help="prompts per (target, source) row (default 100; each LCB language has 100-300)")
    parser.add_argument("--seed", type=int, default=0, help="seed for prompt order, segments and splice points")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument("--any-boundary", action="store_true",
                        help="splice Latin-script segments at any word boundary, even where the first "
                             "foreign word is also a target-language word")
    args = parser.parse_args(argv)

    prompts = load_prompts(args.lcb_dir)
    cases = build_cases(prompts, args.per_language, args.seed, clear_boundaries=not args.any_boundary)
    started = time.perf_counter()
    results = evaluate(cases, progress=True)
    elapsed = time.perf_counter() - started
    print(format_table(results, args.markdown))
    detections = 2 * len(cases)
    print(f"\n{detections} detections in {elapsed:.1f} s ({1e6 * elapsed / detections:.0f} us each)")
    return 0 if all(r["meets_floor"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
