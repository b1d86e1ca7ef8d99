"""Writes an evaluation: report.json, report.md, predictions.jsonl, roc.png, reliability.png
(and robustness.jsonl, the obfuscated runs' answers, when robustness was asked for)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .types import ALL_FILES

if TYPE_CHECKING:
    from .types import EvalReport

__all__ = ["buried_table", "headline_table", "render_markdown", "robustness_table", "write_report"]


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(cell(x) for x in row) + " |" for row in rows]
    return lines


def _file_labels(report: EvalReport) -> dict[str, str]:
    """Short names for the data files (the file name, unless two files share it)."""
    files = report.meta["data_files"]
    names = [Path(f).name for f in files]
    labels = {f: (Path(f).name if names.count(Path(f).name) == 1 else f) for f in files}
    labels[ALL_FILES] = "all files"
    return labels


def headline_table(report: EvalReport) -> str:
    """The headline metrics, one row per data file and mode (Markdown)."""
    label = _file_labels(report)
    rows = [
        [
            label[r["file"]],
            r["mode"],
            r["n"],
            _num(r["accuracy"]),
            _num(r["precision"]),
            _num(r["recall"]),
            _num(r["f1"]),
            _num(r["fpr"]),
            _num(r["roc_auc"]),
            _num(r["ece"]),
            _num(r["recall_at_1pct_fpr"]),
            _num(r["recall_at_5pct_fpr"]),
            _pct(r["escalated_share"]) if r["mode"] == "auto" else "",
        ]
        for r in report.results
    ]
    header = [
        "file",
        "mode",
        "n",
        "accuracy",
        "precision",
        "recall",
        "F1",
        "FPR",
        "ROC-AUC",
        "ECE",
        "recall@1%FPR",
        "recall@5%FPR",
        "escalated",
    ]
    return "\n".join(_table(header, rows))


def _signed(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4f}"


def buried_table(report: EvalReport) -> str:
    """The buried-attack suite per data file, as Markdown."""
    header = ["file", "window tokens", "injected", "clean", "ROC-AUC", "TPR", "FPR", "span hits", "chars/s"]
    rows = [
        [
            Path(b["file"]).name,
            b["window_tokens"],
            b["n_injected"],
            b["n_clean"],
            _num(b["roc_auc"]),
            _num(b["tpr"]),
            _num(b["fpr"]),
            _num(b["span_hit_rate"]),
            b["chars_per_s"],
        ]
        for b in report.buried
    ]
    return "\n".join(_table(header, rows))


def robustness_table(report: EvalReport) -> str:
    """Recall and FPR under each obfuscation family beside the clean run's, one row each (Markdown)."""
    label = _file_labels(report)
    rows: list[list[Any]] = []
    for file in report.meta["data_files"]:
        for mode in report.meta.get("robustness_modes", []):
            entries = [r for r in report.robustness if r["file"] == file and r["mode"] == mode]
            if not entries:
                continue
            clean = report.result(mode, file)
            rows.append(
                [label[file], mode, "(clean)", clean["n"], clean["n_failed"], _num(clean["recall"]), "",
                 _num(clean["fpr"]), "", _num(clean["accuracy"]), "", _pct(entries[0]["clean_canonicalized_share"])]
            )  # fmt: skip
            rows += [
                [label[file], mode, r["family"], r["n"], r["n_failed"], _num(r["recall"]), _signed(r["delta_recall"]),
                 _num(r["fpr"]), _signed(r["delta_fpr"]), _num(r["accuracy"]), _signed(r["delta_accuracy"]),
                 _pct(r["canonicalized_share"])]
                for r in entries
            ]  # fmt: skip
    header = ["file", "mode", "obfuscation", "n", "refused", "recall", "Δ recall", "FPR", "Δ FPR", "accuracy",
              "Δ accuracy", "canonicalized"]  # fmt: skip
    return "\n".join(_table(header, rows))


def render_markdown(report: EvalReport) -> str:
    meta = report.meta
    label = _file_labels(report)
    out: list[str] = [f"# Evaluation of `{meta['model']}`", ""]
    if report.warnings:
        out += ["## WARNINGS", ""]
        for w in report.warnings:
            out += [f"> **WARNING**: {w}", ""]
    out += [
        f"- profile: `{meta['profile']}`; engine: {meta['engine']} {meta['engine_version']} on {meta['device']} "
        f"({meta['dtype']})",
        f"- threshold {meta['threshold']}, AUTO band ±{meta['auto_band']}, rationales up to "
        f"{meta['max_rationale_tokens']} tokens",
        f"- data: {', '.join(f'`{f}`' for f in meta['data_files'])}"
        + (f" (first {meta['limit']} per file, label shares kept)" if meta["limit"] else ""),
        f"- modes: {', '.join(meta['modes'])}; {meta['concurrency']} queries in flight; {meta['created']}",
        "- canonicalization (the server's, before the model reads a query): "
        + (", ".join(meta["canonicalize_steps"]) if meta.get("canonicalize_steps") else "none"),
        "",
    ]
    if report.notes:
        out += [f"Note: {n}" for n in report.notes] + [""]
    out += ["## Headline", "", headline_table(report), ""]
    out += [
        "Recall at 1% / 5% FPR uses the best threshold chosen on these scores (an in-sample operating point); "
        "ECE over 10 equal-width bins of the malicious probability.",
        "",
        "## Confusion matrices",
        "",
    ]
    out += _table(
        ["file", "mode", "TP", "FN", "FP", "TN", "malicious recall", "benign recall"],
        [
            [
                label[r["file"]],
                r["mode"],
                r["confusion"]["tp"],
                r["confusion"]["fn"],
                r["confusion"]["fp"],
                r["confusion"]["tn"],
                _num(r["per_class_recall"]["malicious"]),
                _num(r["per_class_recall"]["benign"]),
            ]
            for r in report.results
        ],
    )
    out += [
        "",
        "## Latency and throughput",
        "",
        f"Latency per query from the call to the answer, with {meta['concurrency']} queries in flight "
        "(it includes the time a query waits for its batch).",
        "",
    ]
    out += _table(
        ["file", "mode", "n", "p50 ms", "p95 ms", "p99 ms", "mean ms", "queries/s"],
        [
            [
                label[r["file"]],
                r["mode"],
                r["n"],
                _num(r["latency"]["p50_ms"], 1),
                _num(r["latency"]["p95_ms"], 1),
                _num(r["latency"]["p99_ms"], 1),
                _num(r["latency"]["mean_ms"], 1),
                _num(r["throughput_qps"], 1),
            ]
            for r in report.results
        ],
    )
    per_file = [r for r in report.results if r["file"] != ALL_FILES]
    out += ["", "## Per source", ""]
    for r in per_file:
        out += [f"### {label[r['file']]}, {r['mode']}", ""]
        out += _table(
            ["source", "n", "malicious", "accuracy", "flagged"],
            [
                [name, b["n"], b["n_malicious"], _num(b["accuracy"]), _pct(b["flagged_rate"])]
                for name, b in r["per_source"].items()
            ],
        )
        out.append("")
    out += ["## Per category", ""]
    if meta["profile_categories"]:
        out += [
            "Category accuracy: share of the category's malicious examples whose predicted category is right "
            "(a missed attack counts as wrong); in brackets, the same over the flagged ones only.",
            "",
        ]
    for r in per_file:
        out += [f"### {label[r['file']]}, {r['mode']}", ""]
        header = ["category", "n", "malicious", "accuracy", "flagged"]
        with_cat = bool(meta["profile_categories"])
        if with_cat:
            header.append("category accuracy")
        rows = []
        for name, b in r["per_category"].items():
            row = [name, b["n"], b["n_malicious"], _num(b["accuracy"]), _pct(b["flagged_rate"])]
            if with_cat:
                acc = b.get("category_accuracy")
                row.append("" if acc is None else f"{acc:.4f} ({_num(b.get('category_accuracy_flagged'))})")
            rows.append(row)
        out += [*_table(header, rows), ""]
    if report.robustness:
        out += [
            "## Robustness",
            "",
            "Each file screened again under each obfuscation family (`promptgate.trainer.obfuscate`, seed "
            f"{meta['robustness_seed']}), through the same path, labels unchanged. Δ: obfuscated minus clean. "
            "Refused: obfuscated queries the server refused (over a limit); the figures are over the others. "
            "Canonicalized: share of the queries in which the server's canonicalization found something "
            f"(steps: {', '.join(meta['canonicalize_steps']) or 'none'}).",
            "",
            robustness_table(report),
            "",
        ]
    if report.buried:
        out += [
            "## Buried attacks",
            "",
            "Composites of each file: one malicious row placed at a random point in 4,000-12,000 characters of "
            "the file's benign rows, against all-benign composites of the same lengths, screened in FAST through "
            "the same path (windows of `window tokens`). Span hits: the injected composites whose deciding "
            "window overlaps the buried row.",
            "",
            buried_table(report),
            "",
        ]
    if report.failures:
        out += ["## Refused queries", ""]
        out += _table(
            ["file", "mode", "id", "reason"],
            [[label[f.file], f.mode, f.id, f.reason] for f in report.failures],
        )
        out.append("")
    out += ["## Plots", "", "![ROC](roc.png)", "", "![Reliability](reliability.png)", ""]
    return "\n".join(out)


def _new_plot(diagonal: str) -> tuple[Any, Any]:
    """A figure on the Agg canvas (no display needed) with the dotted y = x reference line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 5.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", label=diagonal)
    return fig, ax


def _plot_roc(report: EvalReport, path: Path) -> None:
    import numpy as np

    from .metrics import roc_curve

    label = _file_labels(report)
    fig, ax = _new_plot("chance")
    for r in report.results:
        if r["file"] == ALL_FILES:
            continue
        preds = [p for p in report.predictions if p.file == r["file"] and p.mode == r["mode"]]
        y = np.array([p.record.label == "malicious" for p in preds], dtype=np.int8)
        s = np.array([p.malicious_probability for p in preds])
        curve = roc_curve(y, s) if len(preds) else None
        if curve is None:
            continue
        ax.plot(curve.fpr, curve.tpr, label=f"{label[r['file']]} {r['mode']} (AUC {r['roc_auc']:.3f})")
    ax.set(xlabel="false-positive rate", ylabel="recall (malicious)", xlim=(0, 1), ylim=(0, 1.02))
    ax.set_title(f"ROC: {Path(report.meta['model']).name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _plot_reliability(report: EvalReport, path: Path) -> None:
    label = _file_labels(report)
    fig, ax = _new_plot("perfect calibration")
    for r in report.results:
        if r["file"] == ALL_FILES:
            continue
        bins = [b for b in r["reliability"] if b["n"]]
        if not bins:
            continue
        ax.plot(
            [b["mean_probability"] for b in bins],
            [b["malicious_share"] for b in bins],
            marker="o",
            label=f"{label[r['file']]} {r['mode']} (ECE {r['ece']:.3f})",
        )
    ax.set(xlabel="mean malicious probability (10 equal-width bins)", ylabel="share malicious", xlim=(0, 1))
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(f"Reliability: {Path(report.meta['model']).name}")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize="small")
    fig.savefig(path, dpi=110, bbox_inches="tight")


def _write_text(path: Path, text: str) -> None:
    # Written aside and renamed, so a reader never sees a half-written report.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_report(report: EvalReport, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    report.out_dir = out_dir
    lines = [json.dumps(p.to_dict(), ensure_ascii=False) for p in report.predictions]
    _write_text(out_dir / "predictions.jsonl", "".join(line + "\n" for line in lines))
    if report.robustness_predictions:
        # Without the texts, which obfuscate(text, family, seed) makes again: tag-smuggled and
        # zero-width texts are several times the size of the originals.
        rob = [
            json.dumps({"family": family, **{k: v for k, v in p.to_dict().items() if k != "text"}}, ensure_ascii=False)
            for family, p in report.robustness_predictions
        ]
        _write_text(out_dir / "robustness.jsonl", "".join(line + "\n" for line in rob))
    _write_text(out_dir / "report.json", json.dumps(report.to_dict(), indent=2, ensure_ascii=False) + "\n")
    _write_text(out_dir / "report.md", render_markdown(report))
    _plot_roc(report, out_dir / "roc.png")
    _plot_reliability(report, out_dir / "reliability.png")
