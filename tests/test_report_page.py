import re
import shutil
import subprocess

import pytest

from tlpo.detection import detect
from tlpo.report_page import render_report_page

KOREAN = "안녕하세요, 저는 学生 입니다. 오늘 날씨가 좋네요."
FRENCH = "Bonjour, je suis très content. Thank you very much for everything, my friend."
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def make_page() -> str:
    evaluation = {
        "models": {
            "base": {
                "path": "models/base",
                "headline": {"rules crosslingual": {"RPR": 40.0, "LPR": 55.5, "WPR": 60.0}, "lm-eval": {"tlpo_ui_translation": 50.0}},
                "rules_rows": [{"task": "crosslingual", "source": "okapi", "language": "ko", "rpr": 40.0, "lpr": 55.5, "wpr": 60.0}],
            },
            "model": {
                "path": "models/tuned",
                "headline": {"rules crosslingual": {"RPR": 90.0, "LPR": 95.0, "WPR": 97.25}, "lm-eval": {"tlpo_ui_translation": 47.5}},
                "rules_rows": [{"task": "crosslingual", "source": "okapi", "language": "ko", "rpr": 90.0, "lpr": 95.0, "wpr": 97.25}],
            },
        }
    }
    samples = [
        {
            "task": "crosslingual", "source": "okapi", "language": "ko", "id": 3,
            "prompt": "Reply in Korean. Introduce yourself.",
            "responses": {"base": detect(KOREAN, "ko"), "model": detect("안녕하세요, 저는 학생입니다.", "ko")},
        },
        {
            "task": "crosslingual", "source": "okapi", "language": "fr", "id": 7,
            "prompt": "Reply in French. How are you?",
            "responses": {"base": detect(FRENCH, "fr"), "model": detect("Bonjour, je vais très bien, merci beaucoup.", "fr")},
        },
    ]
    return render_report_page(evaluation, samples, title="before <and> after")


def test_page_tables_and_deltas():
    page = make_page()
    assert "<title>before &lt;and&gt; after</title>" in page
    assert '<td class="tlpo-up">+50.00</td>' in page  # RPR 40 -> 90
    assert '<td class="tlpo-down">-2.50</td>' in page  # lm-eval 50 -> 47.5
    assert "<td>97.25</td>" in page


def test_page_is_self_contained():
    page = make_page()
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert re.search(r'<img alt="[^"]+" src="data:image/png;base64,[A-Za-z0-9+/=]{200,}">', page)


def test_page_marks_first_confusion():
    page = make_page()
    assert page.count("tlpo-first") >= 2
    assert re.search(r'<mark class="tlpo-span tlpo-first"[^>]*title="detected: Han">学生<sub>Han</sub></mark>', page)
    assert re.search(r'<mark class="tlpo-span tlpo-first"[^>]*title="detected: en">Thank you very much', page)


def test_page_renders_in_chromium(tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install chromium); .ci/run installs it")
    page_path = tmp_path / "report.html"
    page_path.write_text(make_page(), encoding="utf-8")
    profile = tmp_path / "profile"
    url = page_path.as_uri()

    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True, text=True, timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    rendered = dom.stdout
    marks = re.findall(r'<mark class="(tlpo-span[^"]*)"[^>]*>(.*?)<sub>', rendered)
    assert ("tlpo-span tlpo-first", "学生") in marks
    assert any(classes == "tlpo-span tlpo-first" and text.startswith("Thank you") for classes, text in marks)
    assert "Sample responses" in rendered

    screenshot = tmp_path / "report.png"
    shot = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,2000", f"--screenshot={screenshot}", url],
        capture_output=True, text=True, timeout=120,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 10_000
