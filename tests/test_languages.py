import pytest

from tlpo.languages import (
    LCB_LANGUAGES,
    LID176_CODES,
    is_latin_script,
    language_scripts,
    normalize_language,
    supported_languages,
)
from tlpo.lid import load_model


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("ko", "ko"),
        ("kor", "ko"),
        ("ko-KR", "ko"),
        ("ko_KR", "ko"),
        ("Korean", "ko"),
        ("zh-Hans", "zh"),
        ("zh_CN", "zh"),
        ("zh-TW", "zh"),
        ("cmn", "zh"),
        ("pt-BR", "pt"),
        ("Japanese", "ja"),
        ("jpn", "ja"),
        ("en-US", "en"),
        ("es-419", "es"),
        ("fil", "tl"),
        ("nb", "no"),
        ("iw", "he"),
        (" fr ", "fr"),
    ],
)
def test_normalize_language_codes(code, expected):
    assert normalize_language(code) == expected


@pytest.mark.parametrize("code", ["xx", "klingon", "", "   ", "abc-def-ghi", "tlh"])
def test_normalize_language_unknown_code(code):
    with pytest.raises(ValueError) as error:
        normalize_language(code)
    assert repr(code) in str(error.value)
    assert "lid.176" in str(error.value)


def test_normalize_language_rejects_non_string():
    with pytest.raises(ValueError):
        normalize_language(None)


@pytest.mark.parametrize(
    ("code", "scripts"),
    [
        ("ja", ("Hiragana", "Katakana", "Han")),
        ("ko-KR", ("Hangul",)),
        ("zh-Hant", ("Han",)),
        ("ar", ("Arabic",)),
        ("hi", ("Devanagari",)),
        ("ru", ("Cyrillic",)),
        ("el", ("Greek",)),
        ("th", ("Thai",)),
        ("vi", ("Latin",)),
        ("sh", ("Latin",)),
        ("sr", ("Cyrillic",)),
    ],
)
def test_language_scripts(code, scripts):
    assert language_scripts(code) == scripts


def test_every_lid176_language_has_scripts():
    for code in supported_languages():
        assert language_scripts(code), code
        assert normalize_language(code) == code


def test_lcb_languages_latin_split():
    latin = {code for code in LCB_LANGUAGES if is_latin_script(code)}
    assert latin == {"en", "fr", "de", "pt", "id", "vi", "es", "it", "tr"}


def test_lid176_codes_match_model_labels():
    labels, _ = load_model().predict("a sentence to classify", k=-1, threshold=0.0)
    model_codes = {label.removeprefix("__label__") for label in labels}
    # The .ftz model prunes a few labels with near-zero probability from this output,
    # so check inclusion and size rather than equality.
    assert model_codes <= LID176_CODES
    assert len(LID176_CODES) == 176
