"""Training text and prompt sets of the embedded default model.

The text is Django's human-translated gettext catalogs, read at build time from the
installed `django` package (checked with Django 5.2). The task is translating three
numbered English UI strings into a target language. A known share of the training answers
drifts out of the target language part-way, so the model is confused at a known rate.
"""

from __future__ import annotations

import ast
import hashlib
import random
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path

# Target language -> Django locale folder name.
DJANGO_LOCALES = {
    "fr": "fr",
    "de": "de",
    "es": "es",
    "ru": "ru",
    "ar": "ar",
    "ko": "ko",
    "ja": "ja",
    "zh": "zh_Hans",
}
TARGET_LANGUAGES = tuple(DJANGO_LOCALES)
LANGUAGE_NAMES = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "ru": "Russian",
    "ar": "Arabic",
    "ko": "Korean",
    "ja": "Japanese",
    "zh": "Chinese",
}
LATIN_SCRIPT_TARGETS = frozenset({"fr", "de", "es"})

# The language whose words and lines leak into each target's drifted answers, besides
# English. Each one has a script that the target does not use, so the script rules see it
# even with `ignore_english=True`. Japanese would be a poor neighbour for Chinese (and the
# reverse) because kanji are Han characters, which both languages use.
NEIGHBOURS = {
    "fr": "ar",
    "de": "ru",
    "es": "ru",
    "ru": "zh",
    "ar": "ru",
    "ko": "zh",
    "ja": "ko",
    "zh": "ko",
}

# Drift kinds, drawn uniformly for a drifted answer:
#   line-english    lines k..3 are the English source strings
#   line-neighbour  lines k..3 are the neighbour language's translations
#   word-neighbour  one word of the neighbour's translation is inserted into line k
DRIFT_KINDS = ("line-english", "line-neighbour", "word-neighbour")

# Share of training answers with a drift that the default detector (script rules with
# `ignore_english=True` for own-script targets, word-level language ID for Latin-script
# targets) counts as confusion. English drift in an own-script target is ASCII, which that
# detector ignores, so those targets drift more often in total: see `drift_probability`.
VISIBLE_DRIFT_SHARE = 0.5

# Strings whose English source names a language pull answers towards that language
# (a source like "Traditional Chinese" taught Spanish answers Chinese words), so they go.
_LANGUAGE_WORDS = re.compile(
    r"\b(language|languages|english|chinese|arabic|french|german|spanish|russian|korean|"
    r"japanese)\b",
    re.IGNORECASE,
)
_PLACEHOLDER = re.compile(r"[%{}<>&\\_\[\]|#@*=/,]")
MAX_SOURCE_CHARS = 40


@dataclass(frozen=True)
class CatalogEntry:
    """One English UI string and its translation into every target language."""

    source: str
    translations: dict[str, str]


def django_locale_root() -> Path:
    """Return the folder of the installed Django package; raise if Django is missing."""
    try:
        import django
    except ImportError as error:  # pragma: no cover - django is a dependency
        raise RuntimeError(
            "the embedded model is trained on Django's translation catalogs, but Django is not "
            "installed; run `pip install django`"
        ) from error
    return Path(django.__file__).parent


def _unquote(line: str) -> str:
    # PO strings use C escapes (\" \\ \n \t), which a Python string literal reads the same way.
    return ast.literal_eval(line.strip())


def read_po(path: Path) -> dict[str, str]:
    """Read the singular, non-fuzzy, context-free translated messages of a gettext PO file.

    Plural forms, messages with `msgctxt`, obsolete (`#~`) entries and the header are
    skipped. Returns {msgid: msgstr}.
    """
    messages: dict[str, str] = {}
    entry: dict[str, str] = {}
    fuzzy = False
    field = None

    def finish() -> None:
        msgid = entry.get("msgid", "")
        msgstr = entry.get("msgstr", "")
        if msgid and msgstr and not fuzzy and "msgctxt" not in entry and "msgid_plural" not in entry:
            messages.setdefault(msgid, msgstr)

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        keyword = line.partition(" ")[0]
        # A blank line, a comment, or a new msgctxt/msgid after a msgid ends the entry.
        ends_entry = not line or line.startswith("#") or keyword in ("msgctxt", "msgid")
        if ends_entry and "msgid" in entry:
            finish()
            entry, fuzzy, field = {}, False, None
        if not line or line.startswith("#~"):
            continue
        if line.startswith("#"):
            fuzzy = fuzzy or (line.startswith("#,") and "fuzzy" in line)
            continue
        if line.startswith('"'):
            if field is not None:
                entry[field] += _unquote(line)
            continue
        field = keyword
        entry[field] = _unquote(line[len(keyword):])
    if "msgid" in entry:
        finish()
    return messages


def read_catalog(locale: str, root: Path | None = None) -> dict[str, str]:
    """Merge the `django.po` catalogs of Django and its contrib apps for one locale folder."""
    root = root or django_locale_root()
    paths = sorted(root.glob(f"**/locale/{locale}/LC_MESSAGES/django.po"))
    if not paths:
        raise RuntimeError(
            f"no Django catalog found for locale {locale!r} under {root}; the embedded model "
            "needs a Django release that ships its translations (Django 4.2 or later)"
        )
    merged: dict[str, str] = {}
    for path in paths:
        for msgid, msgstr in read_po(path).items():
            merged.setdefault(msgid, msgstr)
    return merged


def _has_latin_letter(text: str) -> bool:
    return any(ch.isalpha() and "LATIN" in unicodedata.name(ch, "") for ch in text)


def _usable(source: str, translations: dict[str, str]) -> bool:
    if len(source) > MAX_SOURCE_CHARS or "\n" in source or _PLACEHOLDER.search(source):
        return False
    if sum(ch.isalpha() for ch in source) < 3 or _LANGUAGE_WORDS.search(source):
        return False
    for language, text in translations.items():
        if "\n" in text or _PLACEHOLDER.search(text) or text.strip() != text:
            return False
        if not any(ch.isalpha() for ch in text):
            return False
        # A clean own-script answer must not contain Latin letters, or it would look
        # confused to a detector that counts English.
        if language not in LATIN_SCRIPT_TARGETS and _has_latin_letter(text):
            return False
        if language in LATIN_SCRIPT_TARGETS and text == source:
            return False
    return True


def load_entries(root: Path | None = None) -> list[CatalogEntry]:
    """Read every usable UI string translated into all target languages, in a fixed order.

    Usable: one line, at most 40 characters, no placeholders, markup or commas, no language
    names, and no Latin letters in the own-script translations. The order is by a hash of
    the source, so it does not depend on Django's file order.
    """
    catalogs = {language: read_catalog(locale, root) for language, locale in DJANGO_LOCALES.items()}
    common = set.intersection(*(set(catalog) for catalog in catalogs.values()))
    entries = []
    for source in common:
        translations = {language: catalogs[language][source] for language in TARGET_LANGUAGES}
        if _usable(source, translations):
            entries.append(CatalogEntry(source, translations))
    entries.sort(key=lambda entry: hashlib.sha256(entry.source.encode()).hexdigest())
    return entries


def catalog_text(root: Path | None = None) -> list[str]:
    """Return all translated strings of the target catalogs and their English sources.

    This is the tokenizer's training corpus: more varied text than the selected strings,
    so the BPE merges look like those of a real multilingual tokenizer.
    """
    texts = []
    for language, locale in DJANGO_LOCALES.items():
        for msgid, msgstr in sorted(read_catalog(locale, root).items()):
            if language == TARGET_LANGUAGES[0]:
                texts.append(msgid)
            texts.append(msgstr)
    return texts


# ---------------------------------------------------------------------------------------
# Prompts, answers and drift


def user_prompt(sources: tuple[str, ...], language: str) -> str:
    """Format the user turn that asks to translate numbered English lines into `language`."""
    lines = [f"Translate into {LANGUAGE_NAMES[language]}:"]
    lines += [f"{number}. {text}" for number, text in enumerate(sources, start=1)]
    return "\n".join(lines)


def numbered(lines: list[str]) -> str:
    """Join answer lines as "1. ...", "2. ..." on separate lines."""
    return "\n".join(f"{number}. {text}" for number, text in enumerate(lines, start=1))


def drift_probability(language: str) -> float:
    """Return the probability that a training answer in `language` drifts at all.

    Drifts are drawn uniformly from `DRIFT_KINDS`. For Latin-script targets the default
    detector sees all three kinds; for own-script targets it does not see English drift,
    so those targets drift 3/2 times as often to reach the same visible share.
    """
    visible_kinds = len(DRIFT_KINDS) if language in LATIN_SCRIPT_TARGETS else len(DRIFT_KINDS) - 1
    return VISIBLE_DRIFT_SHARE * len(DRIFT_KINDS) / visible_kinds


def neighbour_word(text: str) -> str:
    """Pick the word of `text` that a word-level drift inserts: the longest one, at most 4 characters for unspaced scripts."""
    words = [word.strip(".,:;!?()，。：、") for word in text.split()]
    words = [word for word in words if any(ch.isalpha() for ch in word)]
    word = max(words, key=len) if words else text
    if " " not in text and len(word) > 4:
        word = word[:4]
    return word


def insert_word(line: str, word: str) -> str:
    """Insert `word` in the middle of `line`, at a space if the line has spaces."""
    if " " in line:
        parts = line.split(" ")
        middle = max(1, len(parts) // 2)
        return " ".join(parts[:middle] + [word] + parts[middle:])
    middle = max(1, len(line) // 2)
    return line[:middle] + word + line[middle:]


@dataclass(frozen=True)
class Answer:
    """An assistant answer and the drift put into it (kind None when it is clean)."""

    text: str
    drift_kind: str | None
    drift_line: int | None  # 1-based line where the drift starts


def make_answer(entries: tuple[CatalogEntry, ...], language: str, rng: random.Random, drift: bool) -> Answer:
    """Write the numbered translation of `entries`; when `drift` is true, drift from line 2 or 3 on.

    Line 1 never drifts, so it is a clean measure of translation skill.
    """
    lines = [entry.translations[language] for entry in entries]
    if not drift:
        return Answer(numbered(lines), None, None)
    kind = rng.choice(DRIFT_KINDS)
    start = rng.randint(2, len(lines))  # 1-based
    neighbour = NEIGHBOURS[language]
    for index in range(start - 1, len(lines)):
        if kind == "line-english":
            lines[index] = entries[index].source
        elif kind == "line-neighbour":
            lines[index] = entries[index].translations[neighbour]
    if kind == "word-neighbour":
        word = neighbour_word(entries[start - 1].translations[neighbour])
        lines[start - 1] = insert_word(lines[start - 1], word)
    return Answer(numbered(lines), kind, start)
