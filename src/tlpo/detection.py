"""Confusion detection: the point where a text stops being in its target language.

`detect(text, language)` returns a `ConfusionReport`: whether the text passed, the
character offset of the first confusion point, every wrong-language span and line and
word pass/fail counts. Two methods sit behind it:

- `"script"`: script rules. For a target with its own script (ko, ja, zh, ar, hi, ru,
  ...) a letter of any other script is confusion, except for the classes listed in
  `_classify_segment` (names, units, URLs, formulas, ...). With `ignore_english=True`
  all ASCII letters are ignored, so only foreign non-ASCII scripts count.
- `"word-lid"`: word-level language ID for Latin-script targets (en, fr, es, vi, ...),
  where the script cannot tell the languages apart. Letters of a non-Latin script are
  still confusion by script.

`"auto"` picks script rules for own-script targets and word-level language ID for
Latin-script targets.

Words and lines: a word is a run of letters (with combining marks) of one script. Han,
Hiragana and Katakana are written without spaces, so each of their characters counts as
one word. A line (split on line breaks) counts when it has at least 5 valid words,
where valid means passing or failing, not exempt, and it passes when its passing words
are at least as many as its failing ones. A response passes when no word fails, which
also means no line fails.

All offsets are indices into the exact `text` given (Python `str` indices, so code
points), so callers can map them to tokens.
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import regex

from tlpo.languages import is_latin_script, language_scripts, normalize_language

METHODS = ("auto", "script", "word-lid")

# A line takes part in the line-level verdict from this many valid words on.
MIN_WORDS_PER_LINE = 5


@dataclass
class Span:
    """A wrong-language stretch of the input: `text[start:end]`, detected as `detected`
    (a language code for word-level language ID, a Unicode script name for script rules)."""

    start: int
    end: int
    text: str
    detected: str


@dataclass
class ConfusionReport:
    """The confusion verdict for one text.

    `line_passed` is None when no line has enough valid words to count, and
    `word_passed` is None when the text has no valid word.
    """

    text: str
    language: str
    method: str
    passed: bool
    first_confusion: int | None
    spans: list[Span] = field(default_factory=list)
    lines_passed: int = 0
    lines_failed: int = 0
    words_passed: int = 0
    words_failed: int = 0
    line_passed: bool | None = None
    word_passed: bool | None = None

    def to_dict(self) -> dict:
        """Return the report as a JSON-serialisable dict."""
        return asdict(self)


# ---------------------------------------------------------------------------------------
# Character classes

# Scripts that can be named in a span's `detected`, in the order they are tried. A letter
# in none of them is reported with the generic name "Other".
_NAMED_SCRIPTS = (
    "Latin", "Han", "Hangul", "Hiragana", "Katakana", "Cyrillic", "Arabic", "Devanagari",
    "Greek", "Hebrew", "Thai", "Bengali", "Tamil", "Telugu", "Kannada", "Malayalam",
    "Gujarati", "Gurmukhi", "Oriya", "Sinhala", "Georgian", "Armenian", "Ethiopic", "Khmer",
    "Lao", "Myanmar", "Tibetan", "Thaana", "Syriac", "Mongolian", "Bopomofo", "Yi",
)
_SCRIPT_PATTERNS = [(name, regex.compile(rf"\p{{Script={name}}}")) for name in _NAMED_SCRIPTS]

# Runs of letters and combining marks. Everything else (digits, punctuation, symbols,
# emoji, whitespace) is never confusion.
_LETTER_RUN = regex.compile(r"[\p{L}\p{M}]+")

# URLs, e-mail addresses and markup tags or placeholders (<br>, <unk>, </div>) are
# exempt as a whole, whatever script they contain.
_EXEMPT_REGION = regex.compile(
    r"(?:(?:https?|ftp)://|www\.)[^\s<>\"'`]+"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|</?[A-Za-z][\w:-]{0,30}(?:\s[^<>\n]{0,200})?/?>",
)

# Scripts written without spaces between words: each character counts as one word.
_PER_CHARACTER_WORDS = regex.compile(r"[\p{Script=Han}\p{Script=Hiragana}\p{Script=Katakana}]")

# Code point blocks whose letters are never confusion:
# mathematical alphanumerics, letter-like symbols (℃, ℓ, Ω, K, Å), number forms (Ⅻ),
# and phonetic letters (IPA extensions, spacing modifier letters, phonetic extensions).
_EXEMPT_BLOCKS = regex.compile(
    r"[\U0001D400-\U0001D7FF\u2100-\u214F\u2150-\u218F\u0250-\u02FF\u1D00-\u1DBF\p{M}]+"
)
_PHONETIC = regex.compile(r"[\u0250-\u02FF\u1D00-\u1DBF]")

# Pinyin: Latin letters with at least one tone-marked vowel (Chinese targets only).
_PINYIN = regex.compile(r"[a-zA-ZüÜ]*[āáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜĀÁǍÀĒÉĚÈĪÍǏÌŌÓǑÒŪÚǓÙ][a-zA-ZāáǎàēéěèīíǐìōóǒòūúǔùǖǘǚǜüĀÁǍÀĒÉĚÈĪÍǏÌŌÓǑÒŪÚǓÙÜ]*")

# Greek words of at most this many letters are read as formula symbols (α, Δx, μ).
_MAX_GREEK_SYMBOL_LETTERS = 2

# Units, file formats and programming words that appear in any language's technical text.
UNIT_AND_CODE_WORDS = frozenset(
    """
    mm cm m km kg g mg µg ml l dl kl s ms µs ns min h hz khz mhz ghz kb mb gb tb pb kib mib gib
    bps kbps mbps gbps w kw mw kwh mah v mv a ma c f k pa kpa hpa mpa psi bar db dpi px pt em
    rem fps rpm ppm mol lb lbs oz ft in yd mi mph kmh km/h cc cal kcal
    cpu gpu tpu ram rom ssd hdd usb os api sdk cli gui ui ux url uri http https ftp ssh tcp ip
    udp dns html css js json xml yaml yml csv tsv pdf png jpg jpeg gif svg mp3 mp4 wav zip tar
    gz txt md py python java javascript typescript ts go rust ruby php perl bash sh shell sql
    c++ cpp cuda numpy pandas pytorch torch tensorflow keras git github docker linux unix
    regex utf utf-8 ascii unicode id ok vs etc e.g i.e wifi bluetooth app apps web email
    """.split()
)


@functools.lru_cache(maxsize=65536)
def _script_of(char: str) -> str:
    for name, pattern in _SCRIPT_PATTERNS:
        if pattern.match(char):
            return name
    if regex.match(r"[\p{Script=Common}\p{Script=Inherited}]", char):
        return "Common"
    return "Other"


def _fold_fullwidth(text: str) -> str:
    """Map full-width ASCII (Ａ-Ｚ, ａ-ｚ) to ASCII, as CJK text often writes Latin letters."""
    return "".join(chr(ord(c) - 0xFEE0) if "\uFF01" <= c <= "\uFF5E" else c for c in text)


# ---------------------------------------------------------------------------------------
# Word segmentation shared by both methods


@dataclass
class _Word:
    start: int
    end: int
    script: str
    line: int
    units: int  # how many words it counts for (characters for Han and kana)
    verdict: str = "pass"  # "pass", "fail", "exempt", or "name" (resolved later)
    detected: str = ""


class _Target:
    """Precompiled tables for one target language and option set."""

    def __init__(self, language: str):
        self.language = language
        self.scripts = language_scripts(language)
        allowed = "".join(rf"\p{{Script={s}}}" for s in self.scripts)
        self.own_run = regex.compile(rf"[{allowed}\p{{Script=Common}}\p{{Script=Inherited}}]+")
        self.is_latin = is_latin_script(language)


@functools.lru_cache(maxsize=512)
def _target(language: str) -> _Target:
    return _Target(language)


def _line_starts(text: str) -> list[int]:
    starts = [0]
    for match in regex.finditer(r"\r\n|[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]", text):
        starts.append(match.end())
    return starts


def _split_by_script(text: str, start: int, end: int) -> list[tuple[int, int, str]]:
    """Split text[start:end] into runs of one script; Common and Inherited join the run they are in."""
    runs: list[tuple[int, int, str]] = []
    run_start, run_script = start, None
    for index in range(start, end):
        script = _script_of(text[index])
        if script == "Common":
            continue
        if run_script is None:
            run_script = script
        elif script != run_script:
            runs.append((run_start, index, run_script))
            run_start, run_script = index, script
    runs.append((run_start, end, run_script or "Common"))
    return runs


class _ExemptRegions:
    """The URLs, e-mail addresses and markup tags of a text, for fast position lookups."""

    def __init__(self, text: str):
        self.spans: list[tuple[int, int]] = []
        if "@" in text or "/" in text or "www." in text or "<" in text:
            self.spans = [m.span() for m in _EXEMPT_REGION.finditer(text)]
        self.starts = [start for start, _ in self.spans]

    def contains(self, position: int) -> bool:
        # The regions come from one finditer, so they are sorted and do not overlap.
        index = bisect.bisect_right(self.starts, position) - 1
        return index >= 0 and position < self.spans[index][1]


def _words(text: str, target: _Target) -> list[_Word]:
    """Segment text into words of one script each, skipping URLs and e-mail addresses."""
    exempt = _ExemptRegions(text)
    line_starts = _line_starts(text)
    words: list[_Word] = []
    for match in _LETTER_RUN.finditer(text):
        start, end = match.span()
        if exempt.contains(start):
            continue
        line = bisect.bisect_right(line_starts, start) - 1
        if target.own_run.fullmatch(text, start, end):
            pieces = [(start, end, target.scripts[0])]
        else:
            pieces = _split_by_script(text, start, end)
        for piece_start, piece_end, script in pieces:
            units = len(_PER_CHARACTER_WORDS.findall(text, piece_start, piece_end)) or 1
            words.append(_Word(piece_start, piece_end, script, line, units))
    return words


# ---------------------------------------------------------------------------------------
# Script rules


def _classify_segment(word: _Word, text: str, target: _Target, ignore_english: bool) -> None:
    """Set `word.verdict` for a word under the script rules.

    Exempt (never confusion): letters of script Common or Inherited, mathematical
    alphanumerics, letter-like symbols, number forms, phonetic letters, Greek words of
    at most two letters (formula symbols), pinyin with tone marks for Chinese targets,
    field labels ("context:" first on its line), unit and code words, one-letter Latin
    words, and with `ignore_english` every ASCII word. Capitalised and camel-case Latin
    words become "name", and `_resolve_names` decides them.
    """
    if word.script in target.scripts:
        word.verdict = "pass"
        return
    piece = text[word.start : word.end]
    if word.script == "Common" or _EXEMPT_BLOCKS.fullmatch(piece):
        word.verdict = "exempt"
        return
    if word.script == "Latin":
        folded = _fold_fullwidth(piece)
        if ignore_english and folded.isascii():
            word.verdict = "exempt"
        elif _PHONETIC.search(piece):
            word.verdict = "exempt"
        elif target.language in ("zh", "yue", "wuu") and _PINYIN.fullmatch(piece):
            word.verdict = "exempt"
        elif _is_field_label(text, word):
            word.verdict = "exempt"
            word.detected = "label"
            return
        elif folded.lower() in UNIT_AND_CODE_WORDS or len(folded) == 1:
            # One Latin letter on its own is a variable, label or grade ("x", "d払い").
            word.verdict = "exempt"
        elif not folded.islower():
            # Capitalised or camel-case: a name or brand ("Seoul", "iPhone", "eBay").
            word.verdict = "name"
        else:
            word.verdict = "fail"
        word.detected = "Latin"
        return
    if word.script == "Greek" and len(regex.findall(r"\p{L}", piece)) <= _MAX_GREEK_SYMBOL_LETTERS:
        word.verdict = "exempt"
        return
    word.verdict = "fail"
    word.detected = word.script


# Text that may separate the words of one foreign phrase: no letters, no line break, and
# short, so "a 3-page article" and "Hello, world" stay one phrase.
_PHRASE_GAP = regex.compile(r"[^\p{L}\p{M}\n\r\u2028\u2029()（）]{0,12}")

# A Latin run of at most this many words, alone inside parentheses, is a gloss of the
# word before it ("상아탑(tour d'ivoire)", "꼬리표(label)") and never confusion.
_MAX_GLOSS_WORDS = 4
_OPENING_PARENTHESIS = regex.compile(r"[(（]\s*$")
_CLOSING_PARENTHESIS = regex.compile(r"\s*[)）]")

# A run of this many capitalised Latin words is a title or sentence, not a name.
_MIN_CAPITALISED_PHRASE_WORDS = 4


def _resolve_names(words: list[_Word], text: str, ignore_english: bool) -> None:
    """Decide capitalised Latin words: a name alone, part of a foreign phrase otherwise.

    A capitalised word is exempt as a name unless it sits in a run of Latin words that
    also contains a lower-case word that failed ("The weather is nice") or at least four
    title-case words ("What Is Statistical Learning"). Then the whole run is foreign
    text and fails from its first word on, including unit, code and one-letter words
    in it, but not ASCII words under `ignore_english`. A short run alone in
    parentheses is a gloss and exempt as a whole.
    """
    index = 0
    while index < len(words):
        if words[index].script != "Latin" or words[index].verdict not in ("name", "fail", "exempt"):
            index += 1
            continue
        run_end = index + 1
        while (
            run_end < len(words)
            and words[run_end].script == "Latin"
            and words[run_end].verdict in ("name", "fail", "exempt")
            and _PHRASE_GAP.fullmatch(text, words[run_end - 1].end, words[run_end].start)
        ):
            run_end += 1
        run = words[index:run_end]
        if _is_gloss(text, run):
            for word in run:
                word.verdict = "exempt"
            index = run_end
            continue
        # Title-case words only: acronym runs ("YTN NEWS FM") are names.
        title_words = sum(w.verdict == "name" and not text[w.start : w.end].isupper() for w in run)
        has_failure = any(w.verdict == "fail" for w in run) or title_words >= _MIN_CAPITALISED_PHRASE_WORDS
        for word in run:
            if word.verdict == "name":
                word.verdict = "fail" if has_failure else "exempt"
            elif (
                word.verdict == "exempt"
                and word.detected != "label"
                and has_failure
                and len(run) > 1
                and not ignore_english
                and _is_plain_word(text, word)
            ):
                # A unit or code word inside a foreign sentence is part of that sentence.
                word.verdict = "fail"
                word.detected = "Latin"
        index = run_end


def _is_gloss(text: str, run: list[_Word]) -> bool:
    if len(run) > _MAX_GLOSS_WORDS:
        return False
    before = text[max(0, run[0].start - 8) : run[0].start]
    return bool(_OPENING_PARENTHESIS.search(before)) and bool(_CLOSING_PARENTHESIS.match(text, run[-1].end))


def _is_field_label(text: str, word: _Word) -> bool:
    """Return whether a word is a field label: first on its line and followed by a colon
    ("context: ...", "input: ..."), as prompt templates and structured text write them."""
    if text[word.end : word.end + 1] not in (":", "："):
        return False
    line_start = max(text.rfind("\n", 0, word.start), text.rfind("\r", 0, word.start)) + 1
    return not text[line_start : word.start].strip()


def _is_plain_word(text: str, word: _Word) -> bool:
    return text[word.start : word.end].isascii() and not _PHONETIC.search(text, word.start, word.end)


def _script_rule_words(text: str, target: _Target, ignore_english: bool) -> list[_Word]:
    words = _words(text, target)
    for word in words:
        _classify_segment(word, text, target, ignore_english)
    if any(w.verdict in ("name", "fail") and w.script == "Latin" for w in words):
        _resolve_names(words, text, ignore_english)
    return words


# ---------------------------------------------------------------------------------------
# Word-level language ID
#
# The Latin words of each line are labelled with a language by a hidden Markov model
# decoded with Viterbi. The states are the target and the Latin-script languages in
# WORD_LID_LANGUAGES. A word's log score for state L is
#     log(p_word(L) + PROBABILITY_FLOOR)
#     + CONTEXT_WEIGHT * mean over the word's two bigrams of log(p_bigram(L) + PROBABILITY_FLOOR)
#     + TARGET_PRIOR if L is the target
#     + ENGLISH_FUNCTION_WORD_BONUS if L is English and the word is in ENGLISH_FUNCTION_WORDS,
# where p_word comes from `lingua` (confidence values over the states) and p_bigram
# from fastText lid.176. Acronyms score 0 in every state. Changing language costs
# SWITCH_COST, and so does starting a line in a language other than the target, so one
# ambiguous word does not flip the label. A change between two non-target languages
# costs FOREIGN_SWITCH_COST, more, so target words next to an English run are not read
# as a third language ("por que" as Spanish before English in Portuguese). A foreign run of at least MIN_FOREIGN_RUN
# words is confusion unless it is a title or name (`_is_title`), and it is extended
# backwards as `_mark_foreign_runs` describes. A text of more than LINGUA_WORD_LIMIT
# Latin words is scored by a faster, less accurate variant. The values were chosen
# on benchmarks/localisation.py; docs/DETECTION.md lists the measurements.

# Latin-script languages that a word can be attributed to besides the target: the
# seven of the TLPO reference detector (en es de fr id it pt) plus vi and tr from LCB.
WORD_LID_LANGUAGES = ("en", "es", "de", "fr", "id", "it", "pt", "vi", "tr")
TARGET_PRIOR = 0.5
CONTEXT_WEIGHT = 0.5
SWITCH_COST = 2.0
FOREIGN_SWITCH_COST = 2 * SWITCH_COST
MIN_FOREIGN_RUN = 2
PROBABILITY_FLOOR = 0.02
BACKWARD_MARGIN = 0.5

# A Latin word, with inner apostrophes and hyphens ("c'est", "well-known").
_LATIN_WORD = regex.compile(r"\p{Latin}[\p{Latin}\p{M}]*(?:['’-]\p{Latin}[\p{Latin}\p{M}]*)*")

_CACHE_LIMIT = 200_000

# English function words that are not words of the other WORD_LID_LANGUAGES ("was",
# "an" and "will" are German, "do" Portuguese, "has" Spanish, "on" French, "can" and
# "it" Turkish, so they are left out). `lingua` gives such short words weak English
# scores, and English inside another language is the main case this detector is for,
# so they get ENGLISH_FUNCTION_WORD_BONUS (nats) in the English state.
ENGLISH_FUNCTION_WORDS = frozenset(
    """
    the and of what which how does did you your we our they their this that these those
    is are were with about would should could been have had who where when why from
    its be there here
    """.split()
)
ENGLISH_FUNCTION_WORD_BONUS = 1.0
# Labels read from fastText per bigram; a state outside them scores PROBABILITY_FLOOR.
FASTTEXT_LABELS = 20
# A text with more Latin words than this scores the words that `lingua` has not seen
# before with fastText instead and leaves out the bigrams. That is several times faster
# per word and less accurate (docs/DETECTION.md, "Speed").
LINGUA_WORD_LIMIT = 20_000


class _WordModel:
    """Per-language log scores of words and bigrams for one Latin-script target, cached."""

    def __init__(self, language: str):
        from tlpo.lid import load_model

        self.language = language
        self.states = (language, *(code for code in WORD_LID_LANGUAGES if code != language))
        self.fasttext = load_model()
        self.lingua = _lingua_detector(self.states)
        # The state that ENGLISH_FUNCTION_WORDS favour; None for an English target.
        self.english = self.states.index("en") if language != "en" else None
        self._word_cache: dict[str, tuple[float, ...]] = {}
        self._bigram_cache: dict[str, tuple[float, ...]] = {}
        self._fasttext_word_cache: dict[str, tuple[float, ...]] = {}

    def word_scores(self, word: str, lingua: bool = True) -> tuple[float, ...]:
        """Return the log scores of one word: from `lingua`, or from fastText when
        `lingua` is False or the detector lacks the target. Both are cached, apart."""
        scores = self._word_cache.get(word)
        if scores is None and not (lingua and self.lingua is not None):
            scores = self._fasttext_word_cache.get(word)
            if scores is None:
                scores = self._log_scores(self._fasttext_probabilities(word.lower(), FASTTEXT_LABELS))
                if len(self._fasttext_word_cache) < _CACHE_LIMIT:
                    self._fasttext_word_cache[word] = scores
            return scores
        if scores is None:
            if self.lingua is not None:
                detector, codes = self.lingua
                values = detector.compute_language_confidence_values(word)
                probabilities = {codes[v.language]: v.value for v in values}
            else:
                # lingua does not know the target: fall back to fastText on the word.
                # NOTE: weak for targets close to a state language, e.g. Asturian text
                # is labelled Spanish; only the LCB languages have been measured.
                probabilities = self._fasttext_probabilities(word.lower())
            scores = self._log_scores(probabilities)
            if len(self._word_cache) < _CACHE_LIMIT:
                self._word_cache[word] = scores
        return scores

    def bigram_scores(self, bigram: str) -> tuple[float, ...]:
        scores = self._bigram_cache.get(bigram)
        if scores is None:
            scores = self._log_scores(self._fasttext_probabilities(bigram, FASTTEXT_LABELS))
            if len(self._bigram_cache) < _CACHE_LIMIT:
                self._bigram_cache[bigram] = scores
        return scores

    def _fasttext_probabilities(self, text: str, k: int = -1) -> dict[str, float]:
        labels, probabilities = self.fasttext.predict(text, k=k)
        return {label[9:]: p for label, p in zip(labels, probabilities)}

    def _log_scores(self, probabilities: dict[str, float]) -> tuple[float, ...]:
        return tuple(math.log(probabilities.get(code, 0.0) + PROBABILITY_FLOOR) for code in self.states)


@functools.lru_cache(maxsize=64)
def _lingua_detector(codes: tuple[str, ...]):
    """Build a lingua detector over `codes`; None when lingua lacks the first (the target).

    Other codes that lingua lacks are left out. The first call that computes
    confidences loads the models, which took about 4.5 s for ten languages on a 2-core
    development machine.
    """
    from lingua import IsoCode639_1, Language, LanguageDetectorBuilder

    languages = {}
    for code in codes:
        try:
            languages[Language.from_iso_code_639_1(IsoCode639_1.from_str(code))] = code
        except ValueError:
            if code == codes[0]:
                return None
    return LanguageDetectorBuilder.from_languages(*languages).build(), languages


@functools.lru_cache(maxsize=64)
def _word_model(language: str) -> _WordModel:
    return _WordModel(language)


def _viterbi_languages(rows: list[tuple[float, ...]]) -> list[int]:
    """Decode the HMM; return each word's state index (0 is the target).

    Moving between the target and another language costs SWITCH_COST, and moving
    between two other languages FOREIGN_SWITCH_COST. Paths start in the target for free
    and in another language at SWITCH_COST, as if the line had switched into it.
    """
    n_states = len(rows[0])
    foreign = range(1, n_states)
    scores = [rows[0][k] - (0.0 if k == 0 else SWITCH_COST) for k in range(n_states)]
    back: list[list[int]] = []
    for row in rows[1:]:
        # The two best foreign states, so that each foreign state finds the best other one.
        first = second = 0
        for k in foreign:
            if first == 0 or scores[k] > scores[first]:
                first, second = k, first
            elif second == 0 or scores[k] > scores[second]:
                second = k
        stay_target = scores[0]
        if stay_target >= scores[first] - SWITCH_COST:
            pointers = [0]
            new_scores = [stay_target + row[0]]
        else:
            pointers = [first]
            new_scores = [scores[first] - SWITCH_COST + row[0]]
        from_target = stay_target - SWITCH_COST
        from_first = scores[first] - FOREIGN_SWITCH_COST
        from_second = scores[second] - FOREIGN_SWITCH_COST if second else -math.inf
        for k in foreign:
            pointer, best = k, scores[k]
            other, other_score = (second, from_second) if k == first else (first, from_first)
            if other_score > best:
                pointer, best = other, other_score
            if from_target > best:
                pointer, best = 0, from_target
            pointers.append(pointer)
            new_scores.append(best + row[k])
        back.append(pointers)
        scores = new_scores
    state = max(range(n_states), key=scores.__getitem__)
    path = [state]
    for pointers in reversed(back):
        state = pointers[state]
        path.append(state)
    path.reverse()
    return path


def _word_lid_words(text: str, target: _Target) -> list[_Word]:
    # Non-Latin letters are judged by script; Latin words by the HMM.
    words = [w for w in _words(text, target) if w.script != "Latin"]
    for word in words:
        _classify_segment(word, text, target, ignore_english=False)

    exempt = _ExemptRegions(text)
    line_starts = _line_starts(text)
    by_line: dict[int, list[_Word]] = {}
    for match in _LATIN_WORD.finditer(text):
        start, end = match.span()
        if exempt.contains(start):
            continue
        line = bisect.bisect_right(line_starts, start) - 1
        by_line.setdefault(line, []).append(_Word(start, end, "Latin", line, 1))
    if not by_line:
        return words

    model = _word_model(target.language)
    long_text = sum(len(line_words) for line_words in by_line.values()) > LINGUA_WORD_LIMIT
    for line_words in by_line.values():
        tokens = [text[w.start : w.end] for w in line_words]
        rows = []
        # Acronyms ("SSD", "NLP") carry no language, so they score the same in every state.
        neutral = (0.0,) * len(model.states)
        word_rows = [neutral if _is_acronym(token) else model.word_scores(token, lingua=not long_text) for token in tokens]
        if model.english is not None:
            for i, token in enumerate(tokens):
                if token.lower() in ENGLISH_FUNCTION_WORDS:
                    row = list(word_rows[i])
                    row[model.english] += ENGLISH_FUNCTION_WORD_BONUS
                    word_rows[i] = tuple(row)
        # bigrams[i] scores tokens i and i + 1 together. A long text goes without them,
        # for speed (see LINGUA_WORD_LIMIT).
        bigrams = [
            None if long_text else model.bigram_scores(f"{tokens[i]} {tokens[i + 1]}".lower())
            for i in range(len(tokens) - 1)
        ]
        bigrams.append(None)
        for i in range(len(tokens)):
            row = list(word_rows[i])
            context = [c for c in (bigrams[i], bigrams[i - 1] if i > 0 else None) if c is not None]
            for k in range(len(row)):
                if context:
                    row[k] += CONTEXT_WEIGHT * sum(c[k] for c in context) / len(context)
            row[0] += TARGET_PRIOR
            rows.append(tuple(row))
        path = _viterbi_languages(rows)
        _mark_foreign_runs(line_words, path, model.states, word_rows, tokens)
        words.extend(line_words)
    words.sort(key=lambda w: w.start)
    return words


def _is_acronym(token: str) -> bool:
    return len(token) >= 2 and token.isupper()


def _mark_foreign_runs(
    line_words: list[_Word],
    path: list[int],
    states: tuple[str, ...],
    word_rows: list[tuple[float, ...]],
    tokens: list[str],
) -> None:
    """Fail the words of every foreign run of at least MIN_FOREIGN_RUN words.

    A run made only of capitalised words and connectors is a title or name ("Attack on
    Titan", "Texas Hill Country") and passes. Otherwise the run is first extended
    backwards over words of two or more letters that on their own favour the run's
    language over the target by at least BACKWARD_MARGIN (nats). This is needed because
    the switch cost makes Viterbi start a run late when its first words are only mildly
    foreign ("Generate a 200-word story" inside German). One-letter words ("a", "o",
    "y") carry almost no evidence of their language and are left to Viterbi.
    """
    index = 0
    while index < len(line_words):
        if path[index] == 0:
            index += 1
            continue
        end = index
        while end < len(line_words) and path[end] != 0:
            end += 1
        if end - index >= MIN_FOREIGN_RUN and not _is_title(tokens[index:end]):
            language = path[index]
            start = index
            while (
                start > 0
                and path[start - 1] == 0
                and word_rows[start - 1][language] - word_rows[start - 1][0] >= BACKWARD_MARGIN
                and len(tokens[start - 1]) > 1
            ):
                start -= 1
                path[start] = language
            for word, state in zip(line_words[start:end], path[start:end]):
                word.verdict = "fail"
                word.detected = states[state]
        index = end


# Lower-case words that may join the capitalised words of a name or title
# ("Attack on Titan", "The Old Man and the Sea", "Hunter x Hunter").
TITLE_CONNECTORS = frozenset(
    "of on in the and for to a an at by x de da do dos das del della di du des la le les von van der den y e et".split()
)


def _is_title(tokens: list[str]) -> bool:
    """Return whether words form a name or title: all capitalised or connectors, at least one capitalised."""
    return any(t[:1].isupper() for t in tokens) and all(t[:1].isupper() or t in TITLE_CONNECTORS for t in tokens)


# ---------------------------------------------------------------------------------------
# Report assembly


def _build_report(text: str, language: str, method: str, words: list[_Word]) -> ConfusionReport:
    spans: list[Span] = []
    line_counts: dict[int, list[int]] = {}
    words_passed = words_failed = 0
    open_span: list | None = None  # [start, end, detected, line]
    for word in words:
        if word.verdict not in ("pass", "fail"):
            continue
        counts = line_counts.setdefault(word.line, [0, 0])
        if word.verdict == "pass":
            counts[0] += word.units
            words_passed += word.units
            if open_span is not None:
                spans.append(Span(open_span[0], open_span[1], text[open_span[0] : open_span[1]], open_span[2]))
                open_span = None
            continue
        counts[1] += word.units
        words_failed += word.units
        if open_span is not None and open_span[2] == word.detected and open_span[3] == word.line:
            open_span[1] = word.end
        else:
            if open_span is not None:
                spans.append(Span(open_span[0], open_span[1], text[open_span[0] : open_span[1]], open_span[2]))
            open_span = [word.start, word.end, word.detected, word.line]
    if open_span is not None:
        spans.append(Span(open_span[0], open_span[1], text[open_span[0] : open_span[1]], open_span[2]))

    lines_passed = lines_failed = 0
    for passed_words, failed_words in line_counts.values():
        if passed_words + failed_words < MIN_WORDS_PER_LINE:
            continue
        if passed_words >= failed_words:
            lines_passed += 1
        else:
            lines_failed += 1

    counted_lines = lines_passed + lines_failed
    return ConfusionReport(
        text=text,
        language=language,
        method=method,
        passed=words_failed == 0,
        first_confusion=spans[0].start if spans else None,
        spans=spans,
        lines_passed=lines_passed,
        lines_failed=lines_failed,
        words_passed=words_passed,
        words_failed=words_failed,
        line_passed=(lines_failed == 0) if counted_lines else None,
        word_passed=(words_failed == 0) if (words_passed + words_failed) else None,
    )


# ---------------------------------------------------------------------------------------
# Public interface


def detect(text: str, language: str, *, method: str = "auto", ignore_english: bool = True) -> ConfusionReport:
    """Find where `text` stops being in `language`.

    method: "auto" (script rules for own-script targets, word-level language ID for
    Latin-script targets), "script" or "word-lid". `ignore_english` makes the script
    rules skip every ASCII word, and it has no effect on word-level language ID.
    Raises ValueError for an unknown language or method, TypeError for non-str text.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    canonical = normalize_language(language)
    target = _target(canonical)
    if method not in METHODS:
        raise ValueError(f"unknown detection method {method!r}; use one of {', '.join(METHODS)}")
    if method == "auto":
        method = "word-lid" if target.is_latin else "script"
    if method == "word-lid":
        words = _word_lid_words(text, target)
    else:
        words = _script_rule_words(text, target, ignore_english)
    return _build_report(text, canonical, method, words)


def detect_batch(
    texts: Sequence[str],
    languages: str | Sequence[str],
    *,
    method: str = "auto",
    ignore_english: bool = True,
) -> list[ConfusionReport]:
    """Run `detect` on each text; `languages` is one code for all or one per text."""
    if isinstance(languages, str):
        languages = [languages] * len(texts)
    elif len(languages) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(languages)} languages; pass one language or one per text")
    return [detect(t, lang, method=method, ignore_english=ignore_english) for t, lang in zip(texts, languages)]


def pass_rates(reports: Sequence[ConfusionReport]) -> dict:
    """Aggregate reports into RPR, LPR and WPR in percent (0-100).

    RPR: share of responses that passed. LPR: share of counted lines (>= 5 valid words)
    that passed, over all responses. WPR: share of valid words that passed. LPR and WPR
    are None when nothing was counted; RPR is None for an empty list.
    """
    total = len(reports)
    lines_passed = sum(r.lines_passed for r in reports)
    lines_total = lines_passed + sum(r.lines_failed for r in reports)
    words_passed = sum(r.words_passed for r in reports)
    words_total = words_passed + sum(r.words_failed for r in reports)
    return {
        "rpr": 100.0 * sum(r.passed for r in reports) / total if total else None,
        "lpr": 100.0 * lines_passed / lines_total if lines_total else None,
        "wpr": 100.0 * words_passed / words_total if words_total else None,
        "responses": total,
        "lines": lines_total,
        "words": words_total,
    }
