"""Language codes and the scripts each language is written in.

Every language that the fastText language-ID model `lid.176` has a label for is supported. Codes go
through `langcodes` (BCP-47 / ISO 639), so `ko`, `kor`, `ko-KR`, `ko_KR` and `Korean`
all become `ko`. The canonical code is the one `lid.176` uses as its label, which is
the ISO 639-1 code where one exists (`zh`, `pt`, `he`, `tl`).

Scripts are Unicode script property values (`Hangul`, `Han`, `Latin`, ...), the names
that `regex` accepts in `\\p{Script=...}`.
"""

from __future__ import annotations

import functools

import langcodes

# The 176 labels of fastText's lid.176 model (the same list for .bin and .ftz).
LID176_CODES = frozenset(
    """
    af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk
    ce ceb ckb co cs cv cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga
    gd gl gn gom gu gv he hi hif hr hsb ht hu hy ia id ie ilo io is it ja jbo jv ka kk km
    kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai mg mhr min mk ml mn mr mrj ms
    mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms pnb ps pt qu
    rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr
    tt tyv ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh
    """.split()
)

# The 15 languages of the Language Confusion Benchmark (monolingual prompts).
LCB_LANGUAGES = ("en", "fr", "de", "pt", "zh", "id", "vi", "ar", "es", "it", "ru", "hi", "tr", "ja", "ko")

# Where `langcodes` picks a different code than lid.176's label for the same language.
_LID_ALIASES = {"fil": "tl", "nb": "no", "cmn": "zh", "sr-Latn": "sh", "iw": "he", "in": "id"}

# ISO 15924 script codes (what `langcodes` returns) -> Unicode script property values.
# Japanese and Korean get their writing systems spelled out: Japanese mixes kana and
# kanji, and in Korean text Han characters (hanja) count as Chinese, as the TLPO
# reference detector counts them.
_ISO15924_TO_UNICODE = {
    "Latn": ("Latin",),
    "Cyrl": ("Cyrillic",),
    "Arab": ("Arabic",),
    "Deva": ("Devanagari",),
    "Beng": ("Bengali",),
    "Hebr": ("Hebrew",),
    "Geor": ("Georgian",),
    "Hans": ("Han",),
    "Hant": ("Han",),
    "Jpan": ("Hiragana", "Katakana", "Han"),
    "Kore": ("Hangul",),
    "Ethi": ("Ethiopic",),
    "Tibt": ("Tibetan",),
    "Thaa": ("Thaana",),
    "Grek": ("Greek",),
    "Gujr": ("Gujarati",),
    "Armn": ("Armenian",),
    "Khmr": ("Khmer",),
    "Knda": ("Kannada",),
    "Laoo": ("Lao",),
    "Mlym": ("Malayalam",),
    "Mymr": ("Myanmar",),
    "Orya": ("Oriya",),
    "Guru": ("Gurmukhi",),
    "Sinh": ("Sinhala",),
    "Taml": ("Tamil",),
    "Telu": ("Telugu",),
    "Thai": ("Thai",),
}

# Corrections where the most likely script from CLDR is not what lid.176 was trained on.
_SCRIPT_OVERRIDES = {
    "sh": ("Latin",),  # Serbo-Croatian in Latin letters; `sr` stays Cyrillic
}


def _parse_tag(code: str) -> langcodes.Language:
    tag = code.strip().replace("_", "-")
    try:
        return langcodes.Language.get(tag)
    except (ValueError, langcodes.tag_parser.LanguageTagError):
        pass
    # Not a tag: try it as a language name ("Japanese", "korean", "Deutsch").
    try:
        return langcodes.find(tag)
    except LookupError:
        raise ValueError(_unknown_message(code)) from None


def _unknown_message(code: str) -> str:
    return (
        f"unknown or unsupported language code {code!r}: use a BCP-47 / ISO 639 code or an "
        "English language name of a language that the fastText lid.176 model knows, "
        "for example 'ko', 'zh-Hans', 'pt-BR' or 'Japanese'"
    )


@functools.lru_cache(maxsize=1024)
def normalize_language(code: str) -> str:
    """Return the canonical code (a lid.176 label) for a language code or name.

    Raises ValueError, naming the code, when it is not a language or lid.176 does not
    know the language.
    """
    if not isinstance(code, str) or not code.strip():
        raise ValueError(_unknown_message(code))
    # lid.176's own labels come first: some are Wikipedia codes that mean another
    # language in ISO 639 ("als" is Alemannic there, Tosk Albanian in ISO 639-3).
    if code.strip() in LID176_CODES:
        return code.strip()
    language = _parse_tag(code)
    for candidate in (str(language.prefer_macrolanguage().simplify_script()), language.language):
        candidate = _LID_ALIASES.get(candidate, candidate)
        if candidate in LID176_CODES:
            return candidate
    raise ValueError(_unknown_message(code))


@functools.lru_cache(maxsize=None)
def language_scripts(code: str) -> tuple[str, ...]:
    """Return the Unicode scripts a language is written in, e.g. "ja" -> ("Hiragana", "Katakana", "Han")."""
    canonical = normalize_language(code)
    if canonical in _SCRIPT_OVERRIDES:
        return _SCRIPT_OVERRIDES[canonical]
    iso_script = langcodes.Language.get(canonical).maximize().script
    try:
        return _ISO15924_TO_UNICODE[iso_script]
    except KeyError:
        raise ValueError(f"no script known for language {code!r} (ISO 15924 {iso_script!r})") from None


def is_latin_script(code: str) -> bool:
    """Return whether a language is written in Latin letters only (en, fr, vi, tr, ...)."""
    return language_scripts(code) == ("Latin",)


def supported_languages() -> list[str]:
    """Return the canonical codes of all supported languages, sorted."""
    return sorted(LID176_CODES)
