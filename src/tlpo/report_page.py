"""The evaluation report: one self-contained HTML page for one model or a before/after pair.

The page contains the consistency tables (LCB LPR/WPR/LCPR and the script-rule
RPR/LPR/WPR), the capability table, a bar chart of the headline numbers (a PNG embedded
as base64), and sample responses with each wrong-language span coloured by
`tlpo.reports.render_spans_html`; the span at the first confusion point carries the
class ``tlpo-first`` (outlined). The page has inline CSS, no scripts and no external
resources, so it can be mailed or attached as one file.

`tlpo eval` builds the `evaluation` dictionary that `render_report_page` reads; its
shape is documented on that function.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence

from tlpo.reports import PAGE_CSS, render_report_summary_html, render_spans_html

REPORT_CSS = """
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; font-size: 0.95rem; }
th, td { border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: right; }
th:first-child, td:first-child { text-align: left; }
td.tlpo-up { color: #1a7f37; }
td.tlpo-down { color: #cf222e; }
.tlpo-sample h3 { font-size: 1rem; margin: 0 0 0.4rem; }
.tlpo-prompt { white-space: pre-wrap; color: #444; background: #f6f8fa; padding: 0.4rem; border-radius: 4px; }
.tlpo-legend { font-size: 0.9rem; color: #444; }
"""


def _number(value) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def _delta_cell(value) -> str:
    if value is None:
        return "<td>n/a</td>"
    css = ""
    if value > 0:
        css = "tlpo-up"
    elif value < 0:
        css = "tlpo-down"
    return f'<td class="{css}">{value:+.2f}</td>'


def headline_rows(evaluation: Mapping) -> list[tuple[str, str, dict]]:
    """Flatten the headline numbers into (section, metric, {label: value}) rows."""
    rows = []
    labels = list(evaluation["models"])
    sections: dict[tuple[str, str], dict] = {}
    for label in labels:
        for section, metrics in evaluation["models"][label].get("headline", {}).items():
            for metric, value in metrics.items():
                sections.setdefault((section, metric), {})[label] = value
    for (section, metric), values in sections.items():
        rows.append((section, metric, values))
    return rows


def render_headline_table(evaluation: Mapping) -> str:
    """Render the headline numbers: one column per model, then the delta when there are two."""
    labels = list(evaluation["models"])
    compare = len(labels) == 2
    header = "".join(f"<th>{html.escape(label)}</th>" for label in labels)
    if compare:
        header += f"<th>delta ({html.escape(labels[1])} − {html.escape(labels[0])})</th>"
    body = []
    for section, metric, values in headline_rows(evaluation):
        cells = "".join(f"<td>{_number(values.get(label))}</td>" for label in labels)
        if compare:
            before, after = values.get(labels[0]), values.get(labels[1])
            cells += _delta_cell(None if before is None or after is None else after - before)
        body.append(f"<tr><td>{html.escape(section)} {html.escape(metric)}</td>{cells}</tr>")
    return f"<table><tr><th>metric (percent)</th>{header}</tr>{''.join(body)}</table>"


def render_metric_table(rows: Sequence[Mapping], columns: Sequence[str]) -> str:
    """Render per-group metric rows (task, source, language, then `columns`) as a table."""
    header = "".join(f"<th>{html.escape(name)}</th>" for name in ("task", "source", "language", *columns))
    body = []
    for row in rows:
        cells = [html.escape(str(row[key])) for key in ("task", "source", "language")]
        cells += [_number(row.get(column)) for column in columns]
        body.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    return f"<table><tr>{header}</tr>{''.join(body)}</table>"


def plot_headline_png(evaluation: Mapping) -> bytes:
    """Draw the headline numbers as grouped bars (one bar per model) and return PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = headline_rows(evaluation)
    labels = list(evaluation["models"])
    width = 0.8 / max(1, len(labels))
    figure, axes = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 3.6), dpi=100)
    for offset, label in enumerate(labels):
        xs = [index + offset * width for index in range(len(rows))]
        ys = [values.get(label) or 0.0 for _section, _metric, values in rows]
        axes.bar(xs, ys, width=width, label=label)
    axes.set_xticks([index + width * (len(labels) - 1) / 2 for index in range(len(rows))])
    axes.set_xticklabels([f"{section}\n{metric}" for section, metric, _values in rows], fontsize=7, rotation=20, ha="right")
    axes.set_ylabel("percent")
    axes.set_ylim(0, 100)
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    plt.close(figure)
    return buffer.getvalue()


def render_sample(sample: Mapping) -> str:
    """Render one prompt with each model's response and its marked spans."""
    title = f"{sample['task']} / {sample['source']} / {sample['language']} #{sample['id']}"
    parts = [f'<section class="tlpo-report tlpo-sample"><h3>{html.escape(title)}</h3>']
    parts.append(f'<div class="tlpo-prompt">{html.escape(sample["prompt"])}</div>')
    for label, report in sample["responses"].items():
        parts.append(f"<h4>{html.escape(label)}</h4>")
        parts.append(render_report_summary_html(report))
        parts.append(render_spans_html(report))
    parts.append("</section>")
    return "".join(parts)


def render_report_page(evaluation: Mapping, samples: Sequence[Mapping], *, title: str = "tlpo eval") -> str:
    """Return the complete HTML report.

    `evaluation` has ``models``: an ordered mapping from a label ("base", "model") to
    ``{"path", "headline": {section: {metric: percent}}, "lcb_rows": [...],
    "rules_rows": [...], "capability": {...}}``, where the row lists hold dictionaries
    with task, source, language and the rates in percent. `samples` are dictionaries with
    task, source, language, id, prompt and ``responses``: {label: ConfusionReport}.
    """
    labels = list(evaluation["models"])
    png = base64.b64encode(plot_headline_png(evaluation)).decode("ascii")
    parts = [
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n",
        f"<title>{html.escape(title)}</title>\n<style>{PAGE_CSS}{REPORT_CSS}</style>\n</head>\n<body>\n",
        f"<h1>{html.escape(title)}</h1>\n<ul>",
    ]
    for label in labels:
        parts.append(f"<li><b>{html.escape(label)}</b>: {html.escape(str(evaluation['models'][label]['path']))}</li>")
    parts.append("</ul>\n<h2>Summary</h2>\n")
    parts.append(render_headline_table(evaluation))
    parts.append(f'<img alt="headline metrics per model" src="data:image/png;base64,{png}">\n')

    for label in labels:
        model = evaluation["models"][label]
        parts.append(f"<h2>{html.escape(label)}: consistency per group</h2>\n")
        if model.get("lcb_rows"):
            parts.append("<h3>LCB metric (fastText line ID and English word list)</h3>")
            parts.append(render_metric_table(model["lcb_rows"], ("lpr", "wpr", "lcpr")))
        if model.get("rules_rows"):
            parts.append("<h3>Script-rule detector</h3>")
            parts.append(render_metric_table(model["rules_rows"], ("rpr", "lpr", "wpr")))

    parts.append("<h2>Sample responses</h2>\n")
    parts.append(
        '<p class="tlpo-legend">Coloured spans are in a wrong language or script (the label '
        "follows each span); the outlined span starts at the first confusion point.</p>\n"
    )
    if not samples:
        parts.append("<p>No sample responses.</p>")
    parts.extend(render_sample(sample) for sample in samples)
    parts.append("\n</body>\n</html>\n")
    return "".join(parts)
