"""Result files of an inference run: metrics.json, metrics.csv and a self-contained index.html.

A run folder holds one sub-folder per subject; each gets its own three files, and
the run folder gets the same three files over all subjects. Every metric is
written with its chance level, and a skipped metric with the reason. The
settings (alignment re-standardisation included) are repeated in every file.
"""
from __future__ import annotations

import csv
import html
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from utils.io import atomic_write_json, atomic_write_text
from evaluation.metrics import CI_KEY, CSV_FIELDS, STIMULI_CEILING, Metric, summarize, to_csv_rows

CSV_COLUMNS = ("subject", "section", *CSV_FIELDS)
VALUE_DIGITS = 4
SECTIONS = ("decoding", "encoding")


@dataclass
class SubjectReport:
    """Everything written about one subject.

    `files` maps a caption to a path relative to the subject folder (images are
    shown in index.html, other files linked).
    """

    subject: str
    dataset: str
    folder: str                                       # sub-folder name inside the run folder
    metrics: dict[str, list[Metric]]                  # section -> metrics
    settings: dict[str, Any] = field(default_factory=dict)
    checkpoints: dict[str, dict[str, str]] = field(default_factory=dict)  # name -> {path, sha256}
    files: dict[str, str] = field(default_factory=dict)
    # summary tables shown above the metric list: {"title", "columns": [str], "rows": [[str, ...]]}
    tables: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"subject": self.subject, "dataset": self.dataset,
                               "settings": self.settings, "checkpoints": self.checkpoints,
                               "files": self.files}
        for section, metrics in self.metrics.items():
            out[section] = summarize(metrics)
        return out


def csv_rows(report: SubjectReport) -> list[dict[str, Any]]:
    """One row per metric: subject, section and the metric's CSV fields."""
    return [{"subject": report.subject, "section": section, **row}
            for section, metrics in report.metrics.items() for row in to_csv_rows(metrics)]


def _csv_text(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row[k] is None else row[k] for k in CSV_COLUMNS})
    return buf.getvalue()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.{VALUE_DIGITS}f}"


def _interval(m: Metric) -> str:
    ci = m.details.get(CI_KEY)
    return f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""


def _p_value(m: Metric) -> str:
    p = m.details.get("p_value")
    return "" if p is None else f"{p:.2g}"


def _metric_table(report: SubjectReport) -> str:
    lines = ["<table>", "<tr><th>section</th><th>metric</th><th>value</th><th>95% CI</th><th>chance</th>"
             "<th>p vs chance</th><th>sd over samples</th><th>note</th></tr>"]
    for section, metrics in report.metrics.items():
        for m in metrics:
            ceiling = m.details.get(STIMULI_CEILING)
            note = m.skipped or (f"ceiling (true test stimuli) {_fmt(ceiling)}" if ceiling is not None else "")
            lines.append(f"<tr><td>{html.escape(section)}</td><td>{html.escape(m.name)}</td>"
                         f"<td>{_fmt(m.value)}</td><td>{_interval(m)}</td><td>{_fmt(m.chance)}</td>"
                         f"<td>{_p_value(m)}</td><td>{_fmt(m.details.get('sd_over_samples'))}</td>"
                         f"<td>{html.escape(note)}</td></tr>")
    lines.append("</table>")
    return "\n".join(lines)


def _summary_table(table: dict[str, Any]) -> str:
    """A captioned table of pre-formatted cells; the first column labels the rows."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table["columns"])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(cell))}</td>" for cell in row) + "</tr>"
                   for row in table["rows"])
    return f"<h3>{html.escape(table['title'])}</h3>\n<table><tr>{head}</tr>{body}</table>"


def _settings_list(settings: dict[str, Any]) -> str:
    items = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                    for k, v in settings.items())
    return f"<ul>{items}</ul>"


def _subject_section(report: SubjectReport, prefix: str) -> str:
    """HTML for one subject; `prefix` is the subject folder relative to the page ('' inside it)."""
    parts = [f"<h2>{html.escape(report.dataset)} — {html.escape(report.subject)}</h2>"]
    for caption, rel in report.files.items():
        link = html.escape(prefix + rel, quote=True)
        if rel.endswith(".png"):
            parts.append(f"<figure><img src=\"{link}\" alt=\"{html.escape(caption, quote=True)}\">"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    downloads = [f"<a href=\"{html.escape(prefix + rel, quote=True)}\">{html.escape(caption)}</a>"
                 for caption, rel in report.files.items() if not rel.endswith(".png")]
    if downloads:
        parts.append("<p>" + " · ".join(downloads) + "</p>")
    parts += [_summary_table(t) for t in report.tables]
    parts.append(_metric_table(report))
    parts.append("<h3>settings</h3>" + _settings_list(report.settings))
    ckpts = {name: f"{c['path']} (sha256 {c['sha256'][:16]}…)" for name, c in report.checkpoints.items()}
    if ckpts:
        parts.append("<h3>checkpoints</h3>" + _settings_list(ckpts))
    return "\n".join(parts)


STYLE = ("body{font-family:sans-serif;margin:2em;max-width:1100px}"
         "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}"
         "img{max-width:100%;border:1px solid #ddd}figure{margin:1em 0}")


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n<h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n")


def write_subject_report(folder: str | Path, report: SubjectReport, title: str) -> None:
    """metrics.json, metrics.csv and index.html inside the subject's folder."""
    folder = Path(folder)
    atomic_write_json(folder / "metrics.json", report.to_dict())
    atomic_write_text(folder / "metrics.csv", _csv_text(csv_rows(report)))
    atomic_write_text(folder / "index.html", _page(f"{title} — {report.subject}",
                                                   _subject_section(report, "")))


def write_run_report(run_dir: str | Path, reports: Sequence[SubjectReport], title: str,
                     run_info: dict[str, Any]) -> None:
    """metrics.json, metrics.csv and index.html over all subjects of a run."""
    run_dir = Path(run_dir)
    atomic_write_json(run_dir / "metrics.json",
                      {"run": run_info, "subjects": {r.subject: r.to_dict() for r in reports}})
    atomic_write_text(run_dir / "metrics.csv",
                      _csv_text([row for r in reports for row in csv_rows(r)]))
    body = [_settings_list(run_info)]
    body += [_subject_section(r, f"{r.folder}/") for r in reports]
    atomic_write_text(run_dir / "index.html", _page(title, "\n".join(body)))
