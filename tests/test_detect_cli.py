import json
import sys
from importlib import resources

import pytest

from tlpo.cli import main


def run_cli(capsys, *args, stdin: bytes | None = None, monkeypatch=None):
    if stdin is not None:
        import io

        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    code = main(["detect", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def reports_from(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines()]


def write_jsonl(path, records) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


def test_text_argument(capsys):
    code, out, err = run_cli(capsys, "오늘 날씨 中文 좋아요", "--language", "ko-KR")
    assert code == 0
    [report] = reports_from(out)
    assert report["language"] == "ko"
    assert report["passed"] is False
    assert report["first_confusion"] == 6
    assert report["spans"] == [{"start": 6, "end": 8, "text": "中文", "detected": "Han"}]


def test_text_argument_needs_language(capsys):
    code, out, err = run_cli(capsys, "텍스트")
    assert code == 2
    assert "--language is required" in err
    assert "Traceback" not in err


def test_no_input_is_an_error(capsys):
    code, _, err = run_cli(capsys)
    assert code == 2
    assert "nothing to check" in err


def test_jsonl_file_with_html(capsys, tmp_path):
    source = tmp_path / "texts.jsonl"
    write_jsonl(
        source,
        [
            {"text": "안녕하세요 <中文> & 친구", "language": "ko"},
            {"text": "我们明天见面", "language": "zh"},
            {"text": "Bonjour à tous, the weather is really nice today", "language": "fr"},
        ],
    )
    page = tmp_path / "spans.html"
    code, out, err = run_cli(capsys, "--jsonl", str(source), "--html", str(page), "--summary")
    assert code == 0
    reports = reports_from(out)
    assert [r["passed"] for r in reports] == [False, True, False]
    assert reports[2]["spans"][0]["detected"] == "en"
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["responses"] == 3
    assert summary["rpr"] == pytest.approx(100 / 3)

    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "&lt;" in html  # the text is escaped
    assert "&amp;" in html
    assert 'title="detected: Han"' in html
    assert ">中文<sub>Han</sub></mark>" in html
    assert "<script" not in html  # self-contained
    assert "http" not in html
    assert not list(tmp_path.glob(".spans.html.*"))  # no temporary file left behind


def test_jsonl_stdin_default_language(capsys, monkeypatch):
    data = '{"text": "안녕 中国"}\n\n{"text": "中国 你好", "language": "zh"}\n'.encode("utf-8")
    code, out, _ = run_cli(capsys, "--jsonl", "-", "--language", "ko", stdin=data, monkeypatch=monkeypatch)
    assert code == 0
    assert [r["language"] for r in reports_from(out)] == ["ko", "zh"]


def test_jsonl_crlf_line_ends(capsys, tmp_path):
    source = tmp_path / "crlf.jsonl"
    source.write_bytes('{"text": "첫 줄\\r\\n中文", "language": "ko"}\r\n{"text": "둘", "language": "ko"}\r\n'.encode())
    code, out, _ = run_cli(capsys, "--jsonl", str(source))
    assert code == 0
    first, second = reports_from(out)
    assert first["text"] == "첫 줄\r\n中文"
    assert first["first_confusion"] == 5
    assert second["passed"] is True


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"text": "a", "language": "ko"}\n{not json}\n', "line 2: invalid JSON"),
        (b'{"language": "ko"}\n', "line 1: missing or non-string `text`"),
        (b'{"text": 5, "language": "ko"}\n', "missing or non-string `text`"),
        (b'{"text": "abc"}\n', "line 1: missing `language`"),
        (b'["text", "ko"]\n', "expected a JSON object"),
        (b'{"text": "abc", "language": "klingon"}\n', "line 1: unknown or unsupported language code 'klingon'"),
        (b'{"text": "\xff\xfe", "language": "ko"}\n', "not valid UTF-8 (invalid byte at offset 10)"),
    ],
)
def test_jsonl_bad_input(capsys, tmp_path, content, message):
    source = tmp_path / "bad.jsonl"
    source.write_bytes(content)
    code, _, err = run_cli(capsys, "--jsonl", str(source))
    assert code == 2
    assert message in err
    assert "Traceback" not in err


def test_missing_file(capsys, tmp_path):
    code, _, err = run_cli(capsys, "--jsonl", str(tmp_path / "absent.jsonl"))
    assert code == 2
    assert "cannot read" in err


def test_html_into_missing_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "안녕", "-l", "ko", "--html", str(tmp_path / "no" / "page.html"))
    assert code == 2
    assert "does not exist" in err


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_passes(capsys, text):
    code, out, _ = run_cli(capsys, text, "--language", "ko")
    assert code == 0
    [report] = reports_from(out)
    assert report["passed"] is True
    assert report["word_passed"] is None


def test_one_megabyte_line(capsys, tmp_path):
    text = "오늘은 날씨가 좋아서 산책을 했다 " * 45_000 + "中文"
    source = tmp_path / "big.jsonl"
    write_jsonl(source, [{"text": text, "language": "ko"}])
    assert source.stat().st_size > 1_000_000
    code, out, _ = run_cli(capsys, "--jsonl", str(source))
    assert code == 0
    [report] = reports_from(out)
    assert report["first_confusion"] == len(text) - 2
    assert report["lines_passed"] == 1


def test_method_and_ignore_english_options(capsys):
    text = "안녕하세요 the weather is nice 오늘"
    _, out, _ = run_cli(capsys, text, "-l", "ko")
    assert reports_from(out)[0]["passed"] is True
    _, out, _ = run_cli(capsys, text, "-l", "ko", "--no-ignore-english", "--method", "script")
    report = reports_from(out)[0]
    assert report["method"] == "script"
    assert report["first_confusion"] == text.index("the")


def test_bundled_examples(capsys):
    examples = resources.files("tlpo") / "data" / "examples.jsonl"
    code, out, _ = run_cli(capsys, "--jsonl", str(examples))
    assert code == 0
    reports = reports_from(out)
    assert len(reports) >= 12
    assert {r["language"] for r in reports} >= {"ko", "zh", "ja", "ar", "ru", "fr", "es", "en"}
    assert any(r["passed"] for r in reports)
    assert any(not r["passed"] for r in reports)


def test_help_lists_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["detect", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--jsonl" in out
    assert "--html" in out
    assert "--no-ignore-english" in out


def test_render_spans_html_escapes_and_marks():
    from tlpo.detection import ConfusionReport, Span
    from tlpo.reports import render_spans_html, span_colour

    text = "a<b> 中文 & \"x\""
    report = ConfusionReport(
        text=text,
        language="ko",
        method="script",
        passed=False,
        first_confusion=5,
        spans=[Span(5, 7, "中文", "<Han>")],
    )
    fragment = render_spans_html(report)
    assert fragment.startswith('<div class="tlpo-text">a&lt;b&gt; ')
    assert 'class="tlpo-span tlpo-first"' in fragment
    assert f"background:{span_colour('<Han>')}" in fragment
    assert 'title="detected: &lt;Han&gt;"' in fragment
    assert fragment.endswith(" &amp; &quot;x&quot;</div>")
    assert span_colour("Han") == span_colour("Han")
