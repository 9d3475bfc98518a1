"""The LCB metric: official results on the public outputs, each step, and bad input."""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import pytest

from tlpo import metrics
from tlpo.cli import main
from tlpo.lid import load_model
from tlpo.metrics import Completion, GroupCounts

MODELS = ["command-r-plus", "gpt-4-turbo", "llama-3-instruct", "mistral-8x7b"]

KO_CLEAN = "오늘은 날씨가 정말 좋아서 공원에 산책을 갔습니다"
KO_WITH_ENGLISH_WORD = "오늘은 날씨가 정말 좋아서 computer 공원에 산책을 갔습니다"
EN_LINE = "The weather is very nice today so I went for a walk"


@pytest.fixture(scope="module")
def label_line():
    return metrics.make_line_labeler(load_model())


@pytest.fixture()
def word_list(tmp_path) -> Path:
    path = tmp_path / "english_words.txt"
    path.write_text("computer\nweather\nThe\nHOUSE\ncat\n", encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], columns=("completion", "task", "source", "language")):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def row(completion: str, language: str = "ko", source: str = "okapi", task: str = "monolingual"):
    return {"completion": completion, "task": task, "source": source, "language": language}


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_tsv(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines()]


# --- the official numbers -------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_score_matches_official_tsv(model, lcb_dir, tmp_path, capsys):
    out = tmp_path / f"{model}.tsv"
    code, _, err = run_cli(
        ["lcb", "score", str(lcb_dir / "outputs" / f"{model}.csv"), "--format", "tsv",
         "--out", str(out), "--word-list", str(lcb_dir / "english_words.txt"), "--no-progress"],
        capsys,
    )
    assert code == 0, err
    got = read_tsv(out.read_text(encoding="utf-8"))
    expected = read_tsv((lcb_dir / "expected" / f"{model}.tsv").read_text(encoding="utf-8"))
    assert got[0] == expected[0] + ["lcpr"]
    assert len(got) == len(expected)
    for got_row, expected_row in zip(got[1:], expected[1:]):
        assert got_row[:6] == expected_row, f"row {got_row[:4]}"


# --- steps ----------------------------------------------------------------------------


def test_normalize_cuts_at_next_question():
    assert metrics.normalize_completion("  Hello, world!\nQ: next one\nQ: more") == "Hello world"


def test_normalize_removes_punctuation_and_arabic_comma():
    assert metrics.normalize_completion("a—b، c (d) #e") == "a b c d e"


def test_normalize_keeps_unicode_punctuation():
    # Only ASCII punctuation goes; CJK full stops and commas stay (they become words).
    assert metrics.normalize_completion("你好，世界。") == "你好，世界。"


def test_split_words_whitespace_for_korean():
    assert metrics.split_words("가 나  다\t라", "ko") == ["가", "나", "다", "라"]


def test_split_words_jieba_keeps_spaces():
    words = metrics.split_words("hello world 你好", "zh")
    assert words == ["hello", " ", "world", " ", "你好"]


def test_split_words_fugashi_for_japanese():
    words = metrics.split_words("今日は天気がとても良い", "ja")
    assert words == ["今日", "は", "天気", "が", "とても", "良い"]


def test_scored_lines_drop_short_lines():
    completion = "one two three four\n" + KO_CLEAN + "\n\n가 나 다 라 마"
    lines = metrics.scored_lines(completion, "ko")
    assert [line for line, _ in lines] == [KO_CLEAN, "가 나 다 라 마"]


def test_line_labeler_labels_languages(label_line):
    assert label_line(KO_CLEAN) == "ko"
    assert label_line(EN_LINE) == "en"


def test_line_labeler_low_probability_is_unknown(label_line):
    # lid.176.ftz gives this line "en" with probability 0.12, under the 0.3 threshold.
    assert label_line("1234 5678 9012 3456 7890") == "unknown"


def test_english_words_filter(word_list):
    assert metrics.load_english_words(word_list) == {"computer", "weather"}


def test_score_group_counts(label_line):
    completions = [
        KO_CLEAN,  # passes
        KO_WITH_ENGLISH_WORD,  # word error
        EN_LINE,  # line error
        KO_CLEAN + "\n" + EN_LINE,  # line error, counted once
        "짧은 답",  # fewer than 5 words: skipped
        "   ",  # empty after stripping: skipped
    ]
    counts = metrics.score_group(
        completions, "ko", label_line=label_line, english_words=frozenset({"computer"})
    )
    assert counts == GroupCounts(completions=6, scored=4, line_errors=2, word_errors=1)
    rates = metrics.group_rates(counts, "ko")
    assert rates["lpr"] == pytest.approx(0.5)
    assert rates["wpr"] == pytest.approx(0.5)


def test_word_errors_only_for_wpr_languages(label_line):
    counts = metrics.score_group(
        ["Il fait très beau aujourd'hui computer donc je suis sorti"],
        "fr",
        label_line=label_line,
        english_words=frozenset({"computer"}),
    )
    assert counts.word_errors == 0
    assert "wpr" not in metrics.group_rates(counts, "fr")


def test_wpr_without_clean_completions_is_one():
    # The official script divides by max(1, scored - line errors).
    counts = GroupCounts(completions=3, scored=3, line_errors=3, word_errors=0)
    assert metrics.group_rates(counts, "ja") == {"lpr": 0.0, "wpr": 1.0}


def test_skipped_group_has_full_rates():
    counts = GroupCounts(completions=2, scored=0)
    assert metrics.group_rates(counts, "zh") == {"lpr": 1.0, "wpr": 1.0}


def test_aggregate_rows_order_and_averages():
    groups = {
        ("okapi", "zh"): ({"lpr": 0.5, "wpr": 1.0}, GroupCounts(10, 10)),
        ("okapi", "fr"): ({"lpr": 1.0}, GroupCounts(10, 9)),
        ("aya", "zh"): ({"lpr": 0.9, "wpr": 0.5}, GroupCounts(10, 10)),
        ("aya", "en"): ({"lpr": 0.7}, GroupCounts(10, 10)),
    }
    rows = metrics.aggregate_rows(groups, ("lpr", "wpr"))
    keys = [(source, language) for source, language, _, _ in rows]
    assert keys == [
        ("aya", "en"), ("aya", "zh"), ("okapi", "fr"), ("okapi", "zh"),
        ("aya", "all"), ("okapi", "all"),
        ("all", "en"), ("all", "zh"), ("all", "fr"),  # first appearance, not sorted
        ("all", "all"),
    ]
    rates = {(s, lang): r for s, lang, r, _ in rows}
    assert rates[("aya", "all")] == pytest.approx({"lpr": 0.8, "wpr": 0.5})
    assert rates[("all", "zh")] == pytest.approx({"lpr": 0.7, "wpr": 0.75})
    # The overall row averages the language rows: LPR over en, zh, fr; WPR over zh only.
    assert rates[("all", "all")] == pytest.approx({"lpr": (0.7 + 0.7 + 1.0) / 3, "wpr": 0.75})
    counts = {(s, lang): c for s, lang, _, c in rows}
    assert counts[("all", "all")] == GroupCounts(40, 39)


def test_harmonic_mean():
    assert metrics.harmonic_mean(50.0, 100.0) == pytest.approx(200 / 3)
    assert metrics.harmonic_mean(0.0, 0.0) == 0.0
    assert metrics.harmonic_mean(80.0, None) is None


# --- the command and its input --------------------------------------------------------


def score_tsv(path: Path, word_list: Path, capsys, *extra: str) -> list[list[str]]:
    code, out, err = run_cli(
        ["lcb", "score", str(path), "--format", "tsv", "--word-list", str(word_list),
         "--no-progress", *extra],
        capsys,
    )
    assert code == 0, err
    return read_tsv(out)


def test_tsv_layout(tmp_path, word_list, capsys):
    path = write_csv(
        tmp_path / "model-a.csv",
        [row(KO_CLEAN), row(KO_WITH_ENGLISH_WORD), row(EN_LINE), row(EN_LINE, "fr")],
    )
    table = score_tsv(path, word_list, capsys)
    assert table[0] == ["task", "model", "source", "language", "lpr", "wpr", "lcpr"]
    # The model column defaults to the file name without its suffix.
    assert table[1] == ["monolingual", "model-a", "okapi", "fr", "0.00%", "N/A", "N/A"]
    assert table[2] == ["monolingual", "model-a", "okapi", "ko", "66.67%", "50.00%", "57.14%"]
    assert [r[2:4] for r in table[3:]] == [["okapi", "all"], ["all", "fr"], ["all", "ko"], ["all", "all"]]


def test_text_and_json_formats(tmp_path, word_list, capsys):
    path = write_csv(tmp_path / "m.csv", [row(KO_CLEAN), row("짧은 답")])
    code, out, _ = run_cli(
        ["lcb", "score", str(path), "--word-list", str(word_list), "--no-progress"], capsys
    )
    assert code == 0
    header = out.splitlines()[0].split()
    assert header == ["task", "model", "source", "language", "n", "scored", "LPR", "WPR", "LCPR"]
    assert out.splitlines()[1].split() == [
        "monolingual", "m", "okapi", "ko", "2", "1", "100.00%", "100.00%", "100.00%"
    ]

    code, out, _ = run_cli(
        ["lcb", "score", str(path), "--format", "json", "--word-list", str(word_list),
         "--no-progress"],
        capsys,
    )
    document = json.loads(out)
    assert document["metric"] == "lcb"
    assert document["word_list"] == str(word_list)
    first = document["rows"][0]
    assert first["language"] == "ko"
    assert first["completions"] == 2
    assert first["scored"] == 1
    assert first["lpr"] == pytest.approx(100.0)


def test_out_file_written(tmp_path, word_list, capsys):
    path = write_csv(tmp_path / "m.csv", [row(KO_CLEAN)])
    out = tmp_path / "result.tsv"
    code, stdout, _ = run_cli(
        ["lcb", "score", str(path), "--format", "tsv", "--word-list", str(word_list),
         "--out", str(out), "--no-progress"],
        capsys,
    )
    assert code == 0
    assert stdout == ""
    assert out.read_text(encoding="utf-8").startswith("task\tmodel")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_jsonl_input_matches_csv(tmp_path, word_list, capsys):
    rows = [row(KO_CLEAN), row(KO_WITH_ENGLISH_WORD), row(EN_LINE, "fr", "aya")]
    csv_table = score_tsv(write_csv(tmp_path / "m.csv", rows), word_list, capsys)
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert score_tsv(jsonl, word_list, capsys) == csv_table


def test_language_codes_normalized(tmp_path, word_list, capsys):
    rows = [row(KO_CLEAN, "ko-KR"), row(KO_WITH_ENGLISH_WORD, "Korean")]
    table = score_tsv(write_csv(tmp_path / "m.csv", rows), word_list, capsys)
    assert table[1][3:6] == ["ko", "100.00%", "50.00%"]


def test_crlf_file_scores_like_lf(lcb_dir, tmp_path, word_list, capsys):
    with open(lcb_dir / "outputs" / "gpt-4-turbo.csv", encoding="utf-8", newline="") as handle:
        records = list(csv.DictReader(handle))[::10]
    lf = tmp_path / "lf.csv"
    with open(lf, "w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(records[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(records)
    crlf = tmp_path / "crlf.csv"
    # Every line end becomes CRLF, also those inside quoted multi-line completions.
    crlf.write_bytes(lf.read_bytes().replace(b"\n", b"\r\n"))
    assert sum("\n" in r["completion"] for r in records) > 100
    lf_table = score_tsv(lf, word_list, capsys)
    crlf_table = score_tsv(crlf, word_list, capsys)
    assert len(lf_table) > 50
    assert crlf_table == lf_table


def test_crlf_inside_jsonl_completion(tmp_path, word_list, capsys):
    rows = [row(KO_CLEAN + "\r\n" + EN_LINE), row(KO_CLEAN + "\n" + EN_LINE)]
    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\r\n" for r in rows), encoding="utf-8")
    table = score_tsv(jsonl, word_list, capsys)
    assert table[1][4] == "0.00%"  # both completions have an English line


def test_one_megabyte_line(tmp_path, word_list, capsys):
    long_completion = " ".join([KO_CLEAN] * 40_000)
    assert len(long_completion.encode("utf-8")) > 1_000_000
    path = write_csv(tmp_path / "m.csv", [row(long_completion), row(EN_LINE)])
    table = score_tsv(path, word_list, capsys)
    assert table[1][3:5] == ["ko", "50.00%"]


def test_empty_completion_is_skipped(tmp_path, word_list, capsys, caplog):
    path = write_csv(tmp_path / "m.csv", [row(""), row("  \n\t "), row(EN_LINE)])
    with caplog.at_level(logging.INFO, logger="tlpo"):
        code, out, _ = run_cli(
            ["lcb", "score", str(path), "--format", "json", "--word-list", str(word_list),
             "--no-progress"],
            capsys,
        )
    assert code == 0
    first = json.loads(out)["rows"][0]
    assert (first["completions"], first["scored"], first["lpr"]) == (3, 1, 0.0)
    assert "2 of 3 completions have no line of 5 or more words" in caplog.text


def test_only_empty_completions_score_full(tmp_path, word_list, capsys):
    table = score_tsv(write_csv(tmp_path / "m.csv", [row("")]), word_list, capsys)
    assert table[1][4:6] == ["100.00%", "100.00%"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"completion,task,language\nx,monolingual,ko\n", "lacks the column(s) 'source'"),
        (b"completion,task,source,language\nx,monolingual,okapi,xx-nope\n", "'xx-nope'"),
        (b"completion,task,source,language\nx,monolingual,okapi\n", "missing value for column 'language'"),
        (b"completion,task,source,language\nx,monolingual,,ko\n", "column 'source' is empty"),
        (b"completion,task,source,language\n", "contains no completions"),
        (b"completion,task,source,language\n\xff\xfe,monolingual,okapi,ko\n", "not valid UTF-8"),
    ],
    ids=["missing-column", "unknown-language", "short-row", "empty-source", "no-rows", "invalid-utf8"],
)
def test_bad_csv_rejected(tmp_path, word_list, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    code, out, err = run_cli(
        ["lcb", "score", str(path), "--word-list", str(word_list), "--no-progress"], capsys
    )
    assert code == 2
    assert out == ""
    assert message in err
    assert "Traceback" not in err


def test_invalid_utf8_names_offset(tmp_path, word_list, capsys):
    path = tmp_path / "bad.csv"
    path.write_bytes(b"completion,task,source,language\nabc\xc3(,monolingual,okapi,ko\n")
    code, _, err = run_cli(["lcb", "score", str(path), "--word-list", str(word_list)], capsys)
    assert code == 2
    assert "byte 0xc3 at offset 35 (line 2)" in err


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"completion": "x", "task": "monolingual", "source": "okapi"}', "lacks the column(s) 'language'"),
        ('{"completion": null, "task": "monolingual", "source": "okapi", "language": "ko"}', "missing value for column 'completion'"),
        ('{"completion": 3, "task": "monolingual", "source": "okapi", "language": "ko"}', "must be a string, got int"),
        ('{"completion": "x", "task": "monolingual"', "invalid JSON"),
        ('["x"]', "expected a JSON object"),
        ('{"completion": "\\ud800", "task": "monolingual", "source": "okapi", "language": "ko"}', "unpaired surrogate"),
    ],
    ids=["missing-key", "null", "number", "truncated", "array", "surrogate"],
)
def test_bad_jsonl_rejected(tmp_path, word_list, capsys, line, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(line + "\n", encoding="utf-8")
    code, _, err = run_cli(["lcb", "score", str(path), "--word-list", str(word_list)], capsys)
    assert code == 2
    assert message in err
    assert "line 1" in err


def test_missing_input_file(tmp_path, word_list, capsys):
    code, _, err = run_cli(
        ["lcb", "score", str(tmp_path / "nope.csv"), "--word-list", str(word_list)], capsys
    )
    assert code == 2
    assert "completion file not found" in err


def test_missing_word_list_explains_fix(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("TLPO_LCB_WORDS", raising=False)
    monkeypatch.delenv("TLPO_LCB_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "outputs"
    folder.mkdir()
    path = write_csv(folder / "m.csv", [row(KO_CLEAN)])
    code, _, err = run_cli(["lcb", "score", str(path)], capsys)
    assert code == 2
    assert "English word list not found" in err
    assert str(folder / "english_words.txt") in err
    assert "--word-list" in err


def test_word_list_found_beside_input(tmp_path, monkeypatch, word_list, capsys):
    monkeypatch.delenv("TLPO_LCB_WORDS", raising=False)
    monkeypatch.delenv("TLPO_LCB_DIR", raising=False)
    folder = tmp_path / "outputs"
    folder.mkdir()
    # An LCB checkout: english_words.txt at the root, completions under outputs/.
    path = write_csv(folder / "m.csv", [row(KO_WITH_ENGLISH_WORD)])
    code, out, _ = run_cli(["lcb", "score", str(path), "--format", "json"], capsys)
    assert code == 0
    document = json.loads(out)
    assert document["word_list"] == str(word_list)
    assert document["rows"][0]["wpr"] == pytest.approx(0.0)


def test_word_list_from_environment(tmp_path, monkeypatch, word_list):
    monkeypatch.setenv("TLPO_LCB_WORDS", str(word_list))
    assert metrics.find_word_list(input_path=tmp_path / "elsewhere" / "m.csv") == word_list


def test_missing_lid_model(tmp_path, word_list, capsys):
    path = write_csv(tmp_path / "m.csv", [row(KO_CLEAN)])
    code, _, err = run_cli(
        ["lcb", "score", str(path), "--word-list", str(word_list), "--lid-model",
         str(tmp_path / "lid.176.bin")],
        capsys,
    )
    assert code == 2
    assert "lid.176.bin" in err


def test_rules_metric_table(tmp_path, capsys):
    path = write_csv(
        tmp_path / "m.csv",
        [row(KO_CLEAN), row("오늘은 날씨가 좋아서 公園에 산책을 갔습니다"), row(KO_CLEAN, source="aya")],
    )
    code, out, err = run_cli(
        ["lcb", "score", str(path), "--metric", "rules", "--format", "tsv", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    table = read_tsv(out)
    assert table[0] == ["task", "model", "source", "language", "rpr", "lpr", "wpr"]
    assert table[1][:5] == ["monolingual", "m", "aya", "ko", "100.00%"]
    assert table[2][:5] == ["monolingual", "m", "okapi", "ko", "50.00%"]
    # The overall row averages the per-language row, which averages aya (100) and okapi (50).
    assert table[-1][2:5] == ["all", "all", "75.00%"]
