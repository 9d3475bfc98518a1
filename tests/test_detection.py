import importlib.util
import sys
from pathlib import Path

import pytest

from tlpo import detection
from tlpo.detection import ConfusionReport, Span, detect, detect_batch, pass_rates

REPO_ROOT = Path(__file__).resolve().parents[1]


def spans_of(report: ConfusionReport) -> list[tuple[str, str]]:
    return [(span.text, span.detected) for span in report.spans]


def assert_spans_index_text(report: ConfusionReport) -> None:
    for span in report.spans:
        assert report.text[span.start : span.end] == span.text


# --- script rules: what is never confusion --------------------------------------------


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("가격은 1,000원입니다! (할인 20%) 😀 ★ → ✓ ※", "ko"),  # digits, punctuation, symbols, emoji
        ("줄\t사이\n\n공백   테스트", "ko"),  # whitespace
        ("공식은 𝑥 + 𝑦 = 𝒛 입니다", "ko"),  # mathematical alphanumerics
        ("온도는 25℃, 부피는 3ℓ, 저항은 5Ω 입니다", "ko"),  # letter-like symbols (Ω is Greek script)
        ("제Ⅻ장과 ⅓ 조각", "ko"),  # number forms
        ("각도 α와 β의 합은 π이고 Δx가 작다", "ko"),  # Greek letters in formulas
        ("발음은 [ˈhɛloʊ] 와 /ʃ/ 입니다", "ko"),  # phonetic letters
        ("你好的拼音是 nǐ hǎo，谢谢是 xièxie", "zh"),  # pinyin with tone marks
        ("문의는 help@example.com 또는 https://example.com/中文/页面 으로 주세요", "ko"),  # e-mail, URL
        ("무게는 3 kg, 파일은 json 형식, 코드는 python 으로, cpu 사용률", "ko"),  # units and code words
        ("저는 Seoul에서 John Smith와 iPhone을 샀어요", "ko"),  # names and camel-case brands
        ("줄바꿈은 <br> 태그, 모르는 말은 <unk> 로 표시", "ko"),  # markup tags
        ("ＡＢＣ 회사의 x 값", "ko"),  # full-width Latin and one-letter variables
        ("context: 히말라야는 높다\ninput: 질문", "ko"),  # field labels
        ("상아탑(tour d'ivoire)이라는 표현과 꼬리표(label)", "ko"),  # parenthesised glosses
        ("방송은 YTN NEWS FM 에서 들었다", "ko"),  # acronym runs
    ],
)
def test_script_rules_exempt_classes(text, language):
    report = detect(text, language, ignore_english=False)
    assert report.passed, spans_of(report)
    assert report.first_confusion is None
    assert report.spans == []


def test_pinyin_counts_only_for_chinese():
    report = detect("발음은 nǐ hǎo 입니다", "ko")
    assert not report.passed
    assert spans_of(report) == [("nǐ hǎo", "Latin")]


def test_greek_word_is_confusion():
    report = detect("오늘은 καλημέρα 라고 말했다", "ko")
    assert spans_of(report) == [("καλημέρα", "Greek")]


def test_ignore_english_skips_ascii_only():
    text = "안녕하세요 the weather is nice 오늘 café 어때요"
    ignoring = detect(text, "ko")
    assert spans_of(ignoring) == [("café", "Latin")]
    strict = detect(text, "ko", ignore_english=False)
    assert strict.first_confusion == text.index("the")
    assert spans_of(strict)[0] == ("the weather is nice", "Latin")


def test_capitalised_phrase_is_not_a_name():
    text = "회의가 끝나고 The meeting ended late 그래서 늦었어요"
    report = detect(text, "ko", ignore_english=False)
    assert report.first_confusion == text.index("The")
    assert spans_of(report) == [("The meeting ended late", "Latin")]


def test_long_parenthesised_english_is_confusion():
    text = "설명입니다 (this part is written in English) 끝"
    report = detect(text, "ko", ignore_english=False)
    assert report.first_confusion == text.index("this")


def test_title_case_run_is_not_a_name():
    text = "제목은 What Is Statistical Learning 입니다"
    report = detect(text, "ko", ignore_english=False)
    assert report.first_confusion == text.index("What")


def test_unit_word_inside_foreign_phrase_fails():
    text = "결과는 the python code runs fast 입니다"
    report = detect(text, "ko", ignore_english=False)
    assert spans_of(report) == [("the python code runs fast", "Latin")]


# --- script rules: targets and spans ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "span", "detected"),
    [
        ("오늘 날씨가 좋네요 今天天气很好 그렇죠", "ko", "今天天气很好", "Han"),
        ("我们明天见面 내일 봐요 好吗", "zh", "내일 봐요", "Hangul"),
        ("東京に行きました 정말 좋았어요", "ja", "정말 좋았어요", "Hangul"),
        ("مرحبا كيف حالك Как дела сегодня", "ar", "Как дела сегодня", "Cyrillic"),
        ("Привет как дела مرحبا بك", "ru", "مرحبا بك", "Arabic"),
        ("नमस्ते आप कैसे हैं 你好吗", "hi", "你好吗", "Han"),
    ],
)
def test_script_rules_find_foreign_script(text, language, span, detected):
    report = detect(text, language)
    assert report.method == "script"
    assert not report.passed
    assert report.first_confusion == text.index(span)
    assert spans_of(report) == [(span, detected)]
    assert_spans_index_text(report)


def test_japanese_accepts_kana_and_kanji():
    report = detect("ネットワーク・セキュリティの基本を説明してください。", "ja")
    assert report.passed
    # One word per kana or kanji character; the prolonged sound mark "ー" is script
    # Common and so no word of its own.
    assert report.words_passed == 23


def test_spans_split_by_target_words():
    text = "中国 그리고 日本 또는 Россия"
    report = detect(text, "ko")
    assert spans_of(report) == [("中国", "Han"), ("日本", "Han"), ("Россия", "Cyrillic")]
    assert_spans_index_text(report)


def test_mixed_script_word_splits_at_script_change():
    text = "이것은 GPU를 쓰는 中文说明서 입니다"
    report = detect(text, "ko", ignore_english=False)
    assert spans_of(report) == [("中文说明", "Han")]
    assert report.first_confusion == text.index("中")


# --- offsets into the exact input ---------------------------------------------------------


@pytest.mark.parametrize(
    "prefix",
    [
        "😀👍🏽 ",  # emoji outside the BMP and a skin-tone modifier
        "안\u0308녕\u0301 ",  # combining marks on Hangul
        "첫 줄\r\n둘째 줄\r\n",  # CRLF line ends
        "한국어\u200b텍스트 ",  # zero-width space
        "\ufeff",  # byte order mark
    ],
)
def test_offsets_index_exact_string(prefix):
    text = prefix + "안녕하세요 中文 텍스트"
    report = detect(text, "ko")
    assert report.first_confusion == text.index("中文")
    assert text[report.first_confusion] == "中"
    assert_spans_index_text(report)


def test_offsets_with_combining_marks_in_span():
    text = "한국어 Привет\u0306 끝"  # a combining breve on the Cyrillic word
    report = detect(text, "ko")
    assert spans_of(report) == [("Привет\u0306", "Cyrillic")]


# --- line and word counts -----------------------------------------------------------------


def test_line_and_word_counts():
    text = (
        "오늘 아침에 공원에서 친구를 만났어요 中\n"  # 5 passing words, 1 failing: line passes
        "저는 中国语言学习\n"  # 1 passing, 6 failing Han characters: line fails
        "짧은 줄"  # 2 words: too short to count
    )
    report = detect(text, "ko")
    assert report.words_passed == 8
    assert report.words_failed == 7
    assert report.lines_passed == 1
    assert report.lines_failed == 1
    assert report.line_passed is False
    assert report.word_passed is False
    assert not report.passed


def test_crlf_lines_count_separately():
    text = "하나 둘 셋 넷 다섯\r\n여섯 일곱 여덟 아홉 열"
    report = detect(text, "ko")
    assert report.lines_passed == 2
    assert report.words_passed == 10


@pytest.mark.parametrize("text", ["", "   \n\t ", "12345 !!! 😀"])
def test_text_without_words_passes(text):
    report = detect(text, "ko")
    assert report.passed
    assert report.first_confusion is None
    assert report.line_passed is None
    assert report.word_passed is None
    assert report.words_passed == report.words_failed == 0


# --- word-level language ID for Latin-script targets ----------------------------------------


@pytest.mark.parametrize(
    ("text", "language", "span", "detected"),
    [
        ("Bonjour, je vais très bien merci. but I will be a little late today", "fr", "but I will be a little late today", "en"),
        ("Hola amigo, ¿cómo estás hoy? the weather is really nice today", "es", "the weather is really nice today", "en"),
        ("I went to the store yesterday. Je suis allé au magasin hier soir", "en", "Je suis allé au magasin hier soir", "fr"),
        ("Ich habe heute keine Zeit, because I have to work all day", "de", "because I have to work all day", "en"),
    ],
)
def test_word_lid_finds_foreign_language(text, language, span, detected):
    report = detect(text, language)
    assert report.method == "word-lid"
    assert not report.passed
    assert report.first_confusion == text.index(span)
    assert spans_of(report) == [(span, detected)]


@pytest.mark.parametrize(
    ("text", "language", "words"),
    [
        ("La réunion commence à neuf heures, n'oubliez pas vos notes.", "fr", 10),  # "n'oubliez" is one word
        ("Me gusta mucho caminar por la playa cuando hace sol.", "es", 10),
        ("Wir treffen uns morgen um neun Uhr im Büro.", "de", 9),
        ("Hôm nay trời đẹp nên chúng tôi đi dạo công viên.", "vi", 11),
        ("The meeting starts at nine, so please bring your notes.", "en", 10),
    ],
)
def test_word_lid_passes_clean_text(text, language, words):
    report = detect(text, language)
    assert report.passed, spans_of(report)
    assert report.words_failed == 0
    assert report.words_passed == words
    assert report.lines_passed == 1


def test_word_lid_flags_foreign_script():
    text = "Hola amigo, ¿cómo estás? Привет мир"
    report = detect(text, "es")
    assert spans_of(report) == [("Привет мир", "Cyrillic")]


def test_script_method_on_latin_target_ignores_latin():
    text = "Bonjour tout le monde, the weather is nice, Привет"
    report = detect(text, "fr", method="script")
    assert report.method == "script"
    assert spans_of(report) == [("Привет", "Cyrillic")]


def test_word_lid_skips_urls():
    text = "Consultez https://example.com/the-weather-is-nice-today pour plus d'informations."
    assert detect(text, "fr").passed


@pytest.mark.parametrize(
    ("text", "language"),
    [
        ("No anime Attack on Titan, quem é o personagem principal da série?", "pt"),
        ("Escreva uma resenha do livro The Old Man and the Sea de Ernest Hemingway.", "pt"),
        ("Erkläre die Grundlagen von Cloud Computing für Anfänger.", "de"),
    ],
)
def test_word_lid_title_runs_are_names(text, language):
    assert detect(text, language).passed


@pytest.mark.parametrize(
    ("text", "language", "span"),
    [
        # The run starts at "When", which the English function-word prior pulls in.
        ("Schreiben Sie einen Aufsatz über When do we use spatial data in der Praxis?", "de", "When do we use spatial data"),
        # A line is taken to start in the target, so "O" stays Portuguese.
        ("O What is the capital of France e por quê?", "pt", "What is the capital of France e"),
        ("Bonjour à tous.\nWhat is the capital of France? Je ne sais pas.", "fr", "What is the capital of"),
    ],
)
def test_word_lid_run_starts(text, language, span):
    report = detect(text, language)
    assert report.first_confusion == text.index(span)
    assert spans_of(report) == [(span, "en")]


def test_word_lid_long_text_uses_fasttext_words(monkeypatch):
    text = (
        "Je voudrais écrire un article sur la cuisine française. " * 3
        + "Write a short story about a dog who learns to swim. "
        + "Merci beaucoup pour votre aide précieuse."
    )
    span = "Write a short story about a dog who learns to swim"
    assert spans_of(detect(text, "fr")) == [(span, "en")]
    # Above the limit the words are scored by fastText alone, without bigrams.
    monkeypatch.setattr(detection, "LINGUA_WORD_LIMIT", 10)
    assert spans_of(detect(text, "fr")) == [(span, "en")]


# --- interface ------------------------------------------------------------------------------


def test_detect_normalises_language():
    assert detect("안녕 中", "ko-KR").language == "ko"
    assert detect("안녕 中", "Korean").language == "ko"


def test_detect_rejects_bad_arguments():
    with pytest.raises(ValueError, match="xx"):
        detect("text", "xx")
    with pytest.raises(ValueError, match="method"):
        detect("text", "ko", method="magic")
    with pytest.raises(TypeError):
        detect(b"bytes", "ko")


def test_detect_batch_languages():
    texts = ["안녕 中国", "中国 你好", "Bonjour à tous"]
    reports = detect_batch(texts, ["ko", "zh", "fr"])
    assert [r.passed for r in reports] == [False, True, True]
    same = detect_batch(texts[:2], "ko")
    assert [r.passed for r in same] == [False, False]
    with pytest.raises(ValueError, match="2 texts but 3 languages"):
        detect_batch(texts[:2], ["ko", "zh", "fr"])


def test_pass_rates_aggregate():
    line_ok = "하나 둘 셋 넷 다섯"
    reports = detect_batch([line_ok, line_ok + " 中", "中文 中文 中文 하나", ""], "ko")
    rates = pass_rates(reports)
    assert rates["responses"] == 4
    assert rates["rpr"] == pytest.approx(50.0)
    # Lines with >= 5 valid words: first (pass), second (5 pass vs 1 fail: pass),
    # third (1 pass vs 6 fail: fail).
    assert rates["lines"] == 3
    assert rates["lpr"] == pytest.approx(100 * 2 / 3)
    assert rates["words"] == 5 + 6 + 7
    assert rates["wpr"] == pytest.approx(100 * (5 + 5 + 1) / 18)


def test_pass_rates_empty():
    assert pass_rates([]) == {"rpr": None, "lpr": None, "wpr": None, "responses": 0, "lines": 0, "words": 0}


def test_report_to_dict_round_trip():
    report = detect("안녕 中国", "ko")
    data = report.to_dict()
    assert data["spans"] == [{"start": 3, "end": 5, "text": "中国", "detected": "Han"}]
    assert ConfusionReport(**{**data, "spans": [Span(**s) for s in data["spans"]]}) == report


def test_large_single_line():
    text = "한국어 문장입니다 中文 " * 20_000  # about 260 k characters on one line
    report = detect(text, "ko")
    assert len(report.spans) == 20_000
    assert report.first_confusion == text.index("中")
    assert report.lines_failed == 0
    assert report.lines_passed == 1


# --- localisation benchmark on a subset ----------------------------------------------------


def _load_benchmark():
    spec = importlib.util.spec_from_file_location("localisation", REPO_ROOT / "benchmarks" / "localisation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["localisation"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def localisation_results(lcb_dir):
    benchmark = _load_benchmark()
    cases = benchmark.build_cases(benchmark.load_prompts(lcb_dir), per_language=50, seed=0)
    return {row["splice"]: row for row in benchmark.evaluate(cases)}


# Seeds pooled for the Latin-script rows: one seed's hit rate moves by about 3 points,
# and Portuguese sits within that of its floor, so one seed would pass or fail by chance.
LATIN_SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def latin_localisation_results(lcb_dir):
    benchmark = _load_benchmark()
    prompts = benchmark.load_prompts(lcb_dir)
    pooled: dict[str, dict] = {}
    for seed in LATIN_SEEDS:
        cases = [c for c in benchmark.build_cases(prompts, per_language=300, seed=seed) if benchmark.is_latin_script(c.language)]
        for row in benchmark.evaluate(cases):
            total = pooled.setdefault(row["splice"], {"hit_pct": 0.0, "false_flag_pct": 0.0})
            total["hit_pct"] += row["hit_pct"] / len(LATIN_SEEDS)
            total["false_flag_pct"] += row["false_flag_pct"] / len(LATIN_SEEDS)
    return pooled


def test_localisation_own_script_floors(localisation_results):
    rows = [r for r in localisation_results.values() if r["script"] == "own"]
    assert len(rows) == 12
    for row in rows:
        assert row["hit_pct"] >= 95.0, row
        assert row["false_flag_pct"] <= 2.0, row


def test_localisation_latin_floors(latin_localisation_results):
    assert len(latin_localisation_results) == 9
    for splice, row in latin_localisation_results.items():
        assert row["hit_pct"] >= 85.0, (splice, row)
        assert row["false_flag_pct"] <= 5.0, (splice, row)
