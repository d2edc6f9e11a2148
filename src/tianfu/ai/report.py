"""Local-validation reports: PNG charts, a self-contained HTML page and a PDF.

Charts are drawn with matplotlib's object-oriented API on the Agg canvas, never through pyplot, so
rendering leaves no global figure state behind and needs no display. Text inside the charts and
the PDF is English and ASCII only: the servers may have no CJK font, and class names that are not
ASCII are drawn as "class i" (the HTML report maps them back to the names).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Mapping, Sequence
from datetime import date, datetime

import numpy as np
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.backends.backend_pdf import PdfPages
from matplotlib.figure import Figure

from tianfu.ai.validation import MetricResult, ValidationSummary

SAFETY_NOTE_ZH = "本报告仅用于本院模型治理，不构成诊断"
SAFETY_NOTE_EN = "For model governance only; not a diagnosis"
MAX_ROC_CURVES = 12  # beyond this a one-vs-rest plot is unreadable
CHART_DPI = 110

# (Chinese, English) display names of the metrics validation reports.
METRIC_LABELS: Mapping[str, tuple[str, str]] = {
    "auc": ("曲线下面积", "ROC AUC"),
    "accuracy": ("准确率（最大概率类别）", "Accuracy (most probable class)"),
    "sensitivity": ("灵敏度", "Sensitivity"),
    "specificity": ("特异度", "Specificity"),
    "ppv": ("阳性预测值", "PPV"),
    "npv": ("阴性预测值", "NPV"),
    "f1": ("F1 分数", "F1 score"),
    "macro_f1": ("宏平均 F1", "Macro F1"),
    "brier": ("Brier 分数", "Brier score"),
    "ece": ("期望校准误差", "Expected calibration error"),
    "quadratic_kappa": ("二次加权 Kappa", "Quadratic weighted kappa"),
}

CALIBRATION_TARGETS_ZH: Mapping[str, str] = {
    "positive-class probability": "阳性类别概率",
    "top-class confidence": "最高类别置信度",
}

CHART_TITLES: Mapping[str, tuple[str, str]] = {
    "roc": ("ROC 曲线", "ROC curve"),
    "calibration": ("校准图", "Reliability diagram"),
    "confusion": ("混淆矩阵", "Confusion matrix"),
}


# ---------------------------------------------------------------------------------------------
# Text helpers


def _plain_ascii(text: str) -> str:
    """``text`` for matplotlib: ASCII only (no CJK font needed) and no mathtext from a stray ``$``."""
    folded = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return folded.replace("$", r"\$")


def chart_label(index: int, name: str) -> str:
    """How class ``index`` is named inside the charts: its name if printable ASCII, else "class i"."""
    if name and all(" " <= ch <= "~" for ch in name):
        return _plain_ascii(name)
    return f"class {index}"


def _number(value: float | None, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _interval(result: MetricResult) -> str:
    if result.ci_low is None or result.ci_high is None:
        return "—"
    return f"{result.ci_low:.3f} – {result.ci_high:.3f}"


def _date_text(created_at: datetime | date | str) -> str:
    if isinstance(created_at, datetime):
        return created_at.isoformat(sep=" ", timespec="minutes")
    if isinstance(created_at, date):
        return created_at.isoformat()
    return created_at


def _confidence_percent(summary: ValidationSummary) -> str:
    return f"{100 * (1 - summary.alpha):g} %"


# ---------------------------------------------------------------------------------------------
# Charts


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)  # attaches itself; Agg renders without a display or pyplot
    return figure


def _empty_note(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="0.4")


def roc_figure(summary: ValidationSummary) -> Figure:
    figure = _new_figure(5.2, 5.0)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="chance")
    auc = summary.metric("auc")
    auc_text = _number(auc.value if auc else None)
    if summary.kind == "binary":
        for curve in summary.roc:
            ax.plot(curve.fpr, curve.tpr, linewidth=2, label=f"{chart_label_of(summary, curve.label)}")
        sensitivity, specificity = summary.metric("sensitivity"), summary.metric("specificity")
        if sensitivity and specificity and sensitivity.value is not None and specificity.value is not None:
            ax.plot(
                [1 - specificity.value],
                [sensitivity.value],
                marker="o",
                markersize=8,
                linestyle="none",
                color="tab:red",
                label=f"threshold {summary.threshold:.3g}",
            )
        ax.set_title(f"ROC curve (AUC = {auc_text})")
    else:
        shown_curves = summary.roc[:MAX_ROC_CURVES]
        palette = colormaps["tab10" if len(shown_curves) <= 10 else "tab20"]  # no repeated colours
        for index, curve in enumerate(shown_curves):
            label = f"{chart_label_of(summary, curve.label)} (AUC {_number(curve.auc, 2)})"
            ax.plot(curve.fpr, curve.tpr, linewidth=1.5, label=label, color=palette(index))
        shown = f", first {MAX_ROC_CURVES} classes" if len(summary.roc) > MAX_ROC_CURVES else ""
        ax.set_title(f"One-vs-rest ROC (macro AUC = {auc_text}{shown})")
    if not summary.roc:
        _empty_note(ax, "ROC undefined: only one class present")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_aspect("equal")
    ax.set_xlabel("False positive rate (1 - specificity)")
    ax.set_ylabel("True positive rate (sensitivity)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small" if summary.kind == "binary" else "x-small")
    return figure


def chart_label_of(summary: ValidationSummary, class_name: str) -> str:
    index = summary.classes.index(class_name) if class_name in summary.classes else -1
    return chart_label(index, class_name)


def calibration_figure(summary: ValidationSummary) -> Figure:
    figure = _new_figure(5.2, 6.0)
    reliability, histogram = figure.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    filled = [b for b in summary.calibration if b.count and b.mean_predicted is not None]
    reliability.plot([0, 1], [0, 1], linestyle="--", color="0.6", linewidth=1, label="perfect calibration")
    if filled:
        reliability.plot(
            [b.mean_predicted for b in filled],
            [b.observed for b in filled],
            marker="o",
            linewidth=2,
            label="model",
        )
    reliability.set_ylim(0, 1.01)
    reliability.set_ylabel("Observed frequency")
    reliability.set_title(f"Reliability diagram (ECE = {_number(summary.ece)})")
    reliability.legend(loc="upper left", fontsize="small")
    reliability.grid(alpha=0.3)
    lows = np.array([b.low for b in summary.calibration])
    widths = np.array([b.high - b.low for b in summary.calibration])
    counts = np.array([b.count for b in summary.calibration])
    histogram.bar(lows, counts, width=widths, align="edge", color="tab:blue", alpha=0.6, edgecolor="white")
    histogram.set_xlim(0, 1)
    histogram.set_xlabel(f"Predicted {summary.calibration_target}")
    histogram.set_ylabel("Cases")
    return figure


def confusion_figure(summary: ValidationSummary) -> Figure:
    k = len(summary.classes)
    size = min(4.0 + 0.45 * k, 10.0)
    figure = _new_figure(size + 1.0, size)
    ax = figure.add_subplot()
    matrix = np.asarray(summary.confusion, dtype=np.int64)
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    figure.colorbar(image, ax=ax, shrink=0.8, label="Cases")
    brightest = matrix.max() if matrix.size else 0
    fontsize = 10 if k <= 6 else 7
    for (row, column), count in np.ndenumerate(matrix):
        dark = brightest > 0 and count > brightest / 2  # white on dark cells stays legible
        ax.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white" if dark else "black",
        )
    labels = [chart_label(i, name) for i, name in enumerate(summary.classes)]
    ax.set_xticks(range(k), labels, rotation=45 if k > 3 else 0, ha="right" if k > 3 else "center")
    ax.set_yticks(range(k), labels)
    ax.set_xlabel("Predicted class")
    ax.set_ylabel("True class")
    if summary.kind == "binary" and summary.threshold is not None:
        ax.set_title(f"Confusion matrix at threshold {summary.threshold:.3g}")
    else:
        ax.set_title("Confusion matrix (most probable class)")
    return figure


def _figures(summary: ValidationSummary) -> dict[str, Figure]:
    return {
        "roc": roc_figure(summary),
        "calibration": calibration_figure(summary),
        "confusion": confusion_figure(summary),
    }


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=CHART_DPI)
    return buffer.getvalue()


def charts_png(summary: ValidationSummary) -> dict[str, bytes]:
    """PNG bytes of each chart, keyed "roc", "calibration" and "confusion"."""
    return {name: _png(figure) for name, figure in _figures(summary).items()}


# ---------------------------------------------------------------------------------------------
# HTML

_STYLE = """
body { font-family: "Noto Sans CJK SC", "PingFang SC", "Microsoft YaHei", system-ui, sans-serif;
       margin: 2rem auto; max-width: 60rem; padding: 0 1rem; color: #1a1a1a; line-height: 1.5; }
h1, h2 { font-weight: 600; }
.en { font-size: 0.8em; color: #555; font-weight: normal; }
.note { border: 2px solid #b45309; background: #fffbeb; padding: 0.75rem 1rem; border-radius: 6px; }
table { border-collapse: collapse; margin: 0.5rem 0 1.5rem; }
th, td { border: 1px solid #d4d4d4; padding: 0.3rem 0.6rem; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
th { background: #f5f5f5; }
tr.outside td { background: #fef2f2; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dt { font-weight: 600; }
dd { margin: 0; }
figure { display: inline-block; margin: 0 1rem 1rem 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #e5e5e5; }
"""


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _bilingual(zh: str, en: str) -> str:
    return f'{_e(zh)} <span class="en">{_e(en)}</span>'


def _within_cell(result: MetricResult) -> str:
    if result.within_ci is None:
        return "—"
    if result.within_ci:
        return _bilingual("是", "yes")
    return f"<strong>{_bilingual('否', 'no')}</strong>"


def _metrics_table(summary: ValidationSummary) -> str:
    percent = _confidence_percent(summary)
    head = (
        f"<tr><th>{_bilingual('指标', 'Metric')}</th><th>{_bilingual('本院数值', 'Local value')}</th>"
        f"<th>{_bilingual(f'{percent} 置信区间', f'{percent} CI')}</th>"
        f"<th>{_bilingual('模型卡数值', 'Model card')}</th>"
        f"<th>{_bilingual('模型卡数值在区间内', 'Card value within CI')}</th></tr>"
    )
    rows = []
    for m in summary.metrics:
        zh, en = METRIC_LABELS.get(m.name, (m.name, m.name))
        css = ' class="outside"' if m.within_ci is False else ""
        rows.append(
            f"<tr{css}><td>{_bilingual(zh, en)}</td><td class='num'>{_e(_number(m.value))}</td>"
            f"<td class='num'>{_e(_interval(m))}</td><td class='num'>{_e(_number(m.card_value))}</td>"
            f"<td>{_within_cell(m)}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _class_table(summary: ValidationSummary) -> str:
    head = (
        f"<tr><th>#</th><th>{_bilingual('类别', 'Class')}</th>"
        f"<th>{_bilingual('图表标签', 'Chart label')}</th>"
        f"<th>{_bilingual('病例数', 'Cases')}</th><th>{_bilingual('占比', 'Share')}</th></tr>"
    )
    rows = []
    for index, (name, count) in enumerate(zip(summary.classes, summary.class_counts, strict=True)):
        marker = " ★" if summary.positive == index else ""
        share = count / summary.n if summary.n else 0.0
        rows.append(
            f"<tr><td class='num'>{index}</td><td>{_e(name)}{marker}</td>"
            f"<td>{_e(chart_label(index, name))}</td>"
            f"<td class='num'>{count}</td><td class='num'>{share:.1%}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _details(
    summary: ValidationSummary, model_name: str, model_version: str, dataset: str, created_at: str
) -> list[tuple[str, str, str]]:
    task = ("二分类", "binary") if summary.kind == "binary" else ("多分类", "multiclass")
    details = [
        ("模型", "Model", model_name),
        ("版本", "Version", model_version),
        ("数据集", "Dataset", dataset),
        ("病例数", "Cases (n)", str(summary.n)),
        ("日期", "Date", created_at),
        ("任务类型", "Task", f"{task[0]} {task[1]}"),
    ]
    if summary.kind == "binary" and summary.positive is not None:
        details.append(("阳性类别", "Positive class", summary.classes[summary.positive]))
    if summary.threshold is not None:
        details.append(("阈值", "Threshold", f"{summary.threshold:.4g}"))
    details.append(
        (
            "置信区间方法",
            "CI method",
            f"bootstrap percentile, {summary.n_boot} resamples of {summary.resampled}, seed {summary.seed}",
        )
    )
    return details


def _verdict(summary: ValidationSummary) -> str:
    compared = [m for m in summary.metrics if m.within_ci is not None]
    outside = summary.card_mismatches
    if not compared:
        return _bilingual("模型卡没有可比较的指标。", "The model card has no comparable metrics.")
    if not outside:
        return _bilingual(
            f"模型卡的 {len(compared)} 项指标均在本院置信区间内。",
            f"All {len(compared)} model-card metrics lie within the local confidence intervals.",
        )
    names = ", ".join(METRIC_LABELS.get(m.name, (m.name, m.name))[1] for m in outside)
    warning = _bilingual(
        f"{len(outside)} 项模型卡指标落在本院置信区间之外：{names}。请在本院使用前复核。",
        f"{len(outside)} model-card metric(s) lie outside the local confidence intervals: {names}. "
        "Review before local use.",
    )
    return f"<strong>{warning}</strong>"


def report_html(
    summary: ValidationSummary,
    *,
    model_name: str,
    model_version: str,
    dataset: str,
    created_at: datetime | date | str,
) -> str:
    """A self-contained HTML report (charts inlined as PNG data URIs); every given string is escaped."""
    when = _date_text(created_at)
    details = "".join(
        f"<dt>{_bilingual(zh, en)}</dt><dd>{_e(value)}</dd>"
        for zh, en, value in _details(summary, model_name, model_version, dataset, when)
    )
    figures = []
    for name, png in charts_png(summary).items():
        zh, en = CHART_TITLES[name]
        uri = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
        figures.append(
            f'<figure><img src="{uri}" alt="{_e(en)}"><figcaption>{_bilingual(zh, en)}</figcaption></figure>'
        )
    extra = ""
    if summary.extra:
        rows = "".join(
            f"<tr><td>{_e(key)}</td><td class='num'>{_e(f'{value:.4g}')}</td></tr>"
            for key, value in summary.extra.items()
        )
        extra = f"<h2>{_bilingual('其他数据', 'Other figures')}</h2><table>{rows}</table>"
    note = f'<p class="note" role="note"><strong>{_e(SAFETY_NOTE_ZH)}</strong> / {_e(SAFETY_NOTE_EN)}</p>'
    title = f"验证报告 Validation report — {model_name} {model_version}"
    target = summary.calibration_target
    calibration_target = _bilingual(CALIBRATION_TARGETS_ZH.get(target, target), target)
    return (
        '<!DOCTYPE html>\n<html lang="zh-CN">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{_e(title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_bilingual('验证报告', 'Validation report')}</h1>\n{note}\n"
        f"<dl>{details}</dl>\n"
        f"<h2>{_bilingual('指标', 'Metrics')}</h2>\n<p>{_verdict(summary)}</p>\n{_metrics_table(summary)}\n"
        f"<h2>{_bilingual('类别分布', 'Classes')}</h2>\n{_class_table(summary)}\n{extra}\n"
        f"<h2>{_bilingual('图表', 'Charts')}</h2>\n{''.join(figures)}\n"
        f"<p>{_bilingual('校准对象', 'Calibration measured on')}: {calibration_target}; "
        f"ECE = {_e(_number(summary.ece))}</p>\n{note}\n</body>\n</html>\n"
    )


# ---------------------------------------------------------------------------------------------
# PDF


def _summary_lines(
    summary: ValidationSummary, model_name: str, model_version: str, dataset: str, created_at: str
) -> list[str]:
    percent = _confidence_percent(summary)
    lines = [
        f"Model:    {model_name} {model_version}",
        f"Dataset:  {dataset}",
        f"Cases:    n = {summary.n}    Date: {created_at}",
        f"Task:     {summary.kind}"
        + (f"    threshold {summary.threshold:.4g}" if summary.threshold is not None else ""),
        f"CI:       {percent} bootstrap percentile, {summary.n_boot} resamples of {summary.resampled}, "
        f"seed {summary.seed}",
        "",
        f"{'Metric':<32}{'Value':>8}  {percent + ' CI':<17}{'Card':>8}  Within CI",
        "-" * 80,
    ]
    for m in summary.metrics:
        within = "-" if m.within_ci is None else ("yes" if m.within_ci else "NO")
        interval = _interval(m).replace("—", "-").replace("–", "-")
        lines.append(
            f"{METRIC_LABELS.get(m.name, (m.name, m.name))[1]:<32}{_number(m.value).replace('—', '-'):>8}  "
            f"{interval:<17}{_number(m.card_value).replace('—', '-'):>8}  {within}"
        )
    lines += ["", f"{'#':>3}  {'Class':<30}{'Cases':>8}"]
    shown = list(enumerate(zip(summary.classes, summary.class_counts, strict=True)))
    for index, (name, count) in shown[:20]:
        lines.append(f"{index:>3}  {chart_label(index, name):<30}{count:>8}")
    if len(shown) > 20:
        lines.append(f"     ... {len(shown) - 20} more classes (see the HTML report)")
    for key, value in summary.extra.items():
        lines.append(f"{key}: {value:.4g}")
    return [_plain_ascii(line) for line in lines]


def report_pdf(
    summary: ValidationSummary,
    *,
    model_name: str,
    model_version: str,
    dataset: str,
    created_at: datetime | date | str,
) -> bytes:
    """A PDF: a first page with the details and metrics table as text, then one page per chart.

    English and ASCII only (no CJK font is assumed); non-ASCII names show as "?" or "class i".
    """
    when = _date_text(created_at)
    buffer = io.BytesIO()
    metadata = {"Title": _plain_ascii(f"Validation report {model_name} {model_version}"), "Creator": "Tianfu"}
    with PdfPages(buffer, metadata=metadata) as pdf:
        first = _new_figure(8.27, 11.69)  # A4 portrait
        first.text(0.07, 0.95, "Validation report", fontsize=18, weight="bold", va="top")
        first.text(0.07, 0.915, SAFETY_NOTE_EN + ".", fontsize=11, color="#b45309", va="top")
        _write_lines(first, _summary_lines(summary, model_name, model_version, dataset, when), top=0.88)
        pdf.savefig(first)
        for figure in _figures(summary).values():
            pdf.savefig(figure)
    return buffer.getvalue()


def _write_lines(figure: Figure, lines: Sequence[str], *, top: float) -> None:
    figure.text(0.07, top, "\n".join(lines), family="monospace", fontsize=8.5, va="top", linespacing=1.5)
