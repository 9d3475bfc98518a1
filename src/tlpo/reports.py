"""HTML views of confusion reports.

`render_spans_html(report)` returns an HTML fragment of one text with each
wrong-language span marked in a colour that depends on what it was detected as.
`render_detection_page(reports)` wraps fragments into a self-contained page (inline CSS,
no scripts, no external resources). All text is HTML-escaped.
"""

from __future__ import annotations

import html
import zlib
from collections.abc import Sequence

from tlpo.detection import ConfusionReport

# Background colours for marked spans, picked by a stable hash of the detected label so
# that one label has one colour on every page.
_PALETTE = (
    "#ffb3b3", "#ffd699", "#fff099", "#c2f0c2", "#b3e0ff", "#d9c2ff",
    "#ffc2e0", "#c2fff0", "#e0e0a0", "#f0c8a0", "#a0d8d0", "#d0d0ff",
)

PAGE_CSS = """
body { font-family: system-ui, sans-serif; margin: 2rem; line-height: 1.5; color: #222; }
.tlpo-report { border: 1px solid #ccc; border-radius: 6px; padding: 0.75rem 1rem; margin: 0 0 1rem; }
.tlpo-meta { font-size: 0.85rem; color: #555; margin-bottom: 0.5rem; }
.tlpo-passed { color: #1a7f37; font-weight: bold; }
.tlpo-failed { color: #cf222e; font-weight: bold; }
.tlpo-text { white-space: pre-wrap; word-break: break-word; font-size: 1.05rem; }
.tlpo-span { border-radius: 3px; padding: 0 1px; }
.tlpo-span sub { font-size: 0.65rem; color: #444; margin-left: 1px; }
.tlpo-first { outline: 2px solid #cf222e; }
"""


def span_colour(detected: str) -> str:
    """Return the background colour used for spans detected as `detected`."""
    return _PALETTE[zlib.crc32(detected.encode("utf-8")) % len(_PALETTE)]


def render_spans_html(report: ConfusionReport) -> str:
    """Return the report's text as an HTML fragment with each wrong-language span marked.

    Each span becomes `<mark class="tlpo-span" title="detected: LABEL">` with a
    background colour per label and the label as a subscript. The span at the first
    confusion point also gets the class `tlpo-first`. Whitespace is kept when the
    fragment sits in an element styled `white-space: pre-wrap` (as `.tlpo-text` is).
    """
    text = report.text
    pieces = ['<div class="tlpo-text">']
    position = 0
    for span in sorted(report.spans, key=lambda s: s.start):
        if span.start < position:
            continue  # overlapping spans are not produced by the detector; skip defensively
        pieces.append(html.escape(text[position : span.start]))
        classes = "tlpo-span tlpo-first" if span.start == report.first_confusion else "tlpo-span"
        label = html.escape(span.detected)
        pieces.append(
            f'<mark class="{classes}" style="background:{span_colour(span.detected)}" '
            f'title="detected: {label}">{html.escape(text[span.start : span.end])}<sub>{label}</sub></mark>'
        )
        position = span.end
    pieces.append(html.escape(text[position:]))
    pieces.append("</div>")
    return "".join(pieces)


def render_report_summary_html(report: ConfusionReport) -> str:
    """Return a one-line HTML summary: verdict, language, method, first confusion, counts."""
    verdict = '<span class="tlpo-passed">passed</span>' if report.passed else '<span class="tlpo-failed">failed</span>'
    first = "none" if report.first_confusion is None else f"char {report.first_confusion}"
    return (
        f'<div class="tlpo-meta">{verdict} · language {html.escape(report.language)} · '
        f"method {html.escape(report.method)} · first confusion {first} · "
        f"words {report.words_passed} passed / {report.words_failed} failed · "
        f"lines {report.lines_passed} passed / {report.lines_failed} failed</div>"
    )


def render_detection_page(reports: Sequence[ConfusionReport], title: str = "tlpo detect") -> str:
    """Return a complete HTML document showing every report with its marked spans."""
    body = [
        f'<section class="tlpo-report">{render_report_summary_html(r)}{render_spans_html(r)}</section>'
        for r in reports
    ]
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}</style>\n</head>\n<body>\n"
        f"<h1>{html.escape(title)}</h1>\n" + "\n".join(body) + "\n</body>\n</html>\n"
    )
