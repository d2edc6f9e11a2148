"""Validation reports: PNG charts, the HTML page (escaped, self-contained) and the PDF."""

from __future__ import annotations

import base64
import io
import re
from datetime import UTC, datetime

import numpy as np
import pytest
from matplotlib._pylab_helpers import Gcf
from PIL import Image

from tianfu.ai.report import SAFETY_NOTE_EN, SAFETY_NOTE_ZH, chart_label, charts_png, report_html, report_pdf
from tianfu.ai.validation import ValidationSummary, validate
from tianfu.core.model_registry.manifest import ValidationData

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DATA_URI = re.compile(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"')
DEPARTMENTS = (
    "内分泌科",
    "呼吸科",
    "心血管科",
    "感染科",
    "普通内科",
    "消化科",
    "神经科",
    "肝病科",
    "肾内科",
    "血液科",
    "风湿免疫科",
)


@pytest.fixture(scope="module")
def binary_summary() -> ValidationSummary:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 300)
    p = 1 / (1 + np.exp(-rng.normal(2 * y - 1, 1.0)))
    data = ValidationData(
        "binary", ("normal", "pneumonia"), y, np.column_stack([1 - p, p]), threshold=0.4, extra={"turns": 4.5}
    )
    return validate(data, {"auc": 0.99, "accuracy": 0.75, "sensitivity": 0.8}, n_boot=200)


@pytest.fixture(scope="module")
def multiclass_summary() -> ValidationSummary:
    rng = np.random.default_rng(1)
    k = len(DEPARTMENTS)
    y = rng.integers(0, k, 400)
    logits = rng.normal(0, 1, (400, k))
    logits[np.arange(400), y] += 2.0
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return validate(ValidationData("multiclass", DEPARTMENTS, y, probabilities), {"auc": 0.9}, n_boot=100)


@pytest.fixture(scope="module")
def binary_html(binary_summary: ValidationSummary) -> str:
    return report_html(
        binary_summary,
        model_name="tianfu-imaging-pneumonia",
        model_version="1.2.0",
        dataset="本院胸片 2024",
        created_at=datetime(2024, 5, 1, 9, 30, tzinfo=UTC),
    )


def test_charts_are_png_images_drawn_without_pyplot(binary_summary: ValidationSummary) -> None:
    figures_before = Gcf.get_num_fig_managers()
    charts = charts_png(binary_summary)
    assert Gcf.get_num_fig_managers() == figures_before  # no global figure state left behind
    assert set(charts) == {"roc", "calibration", "confusion"}
    for png in charts.values():
        assert png.startswith(PNG_MAGIC)
        with Image.open(io.BytesIO(png)) as image:
            assert image.width > 300
            assert image.height > 300


def test_html_holds_details_metrics_note_and_inline_charts(
    binary_summary: ValidationSummary, binary_html: str
) -> None:
    html = binary_html
    assert html.startswith("<!DOCTYPE html>")
    assert "验证报告" in html
    assert "Validation report" in html
    assert "tianfu-imaging-pneumonia" in html
    assert "1.2.0" in html
    assert "本院胸片 2024" in html
    assert "2024-05-01 09:30" in html
    assert SAFETY_NOTE_ZH in html
    assert SAFETY_NOTE_EN in html
    auc = binary_summary.metric("auc")
    assert auc is not None
    assert auc.value is not None
    assert auc.ci_low is not None
    assert auc.ci_high is not None
    assert f"{auc.value:.3f}" in html
    assert f"{auc.ci_low:.3f} – {auc.ci_high:.3f}" in html
    assert "0.990" in html  # the card's AUC, outside the local interval
    assert "灵敏度" in html
    assert "Sensitivity" in html
    assert "turns" in html
    images = DATA_URI.findall(html)
    assert len(images) == 3
    for encoded in images:
        assert base64.b64decode(encoded, validate=True).startswith(PNG_MAGIC)
    assert "http://" not in html
    assert "https://" not in html  # self-contained: nothing to fetch


def test_html_flags_card_values_outside_the_interval(
    binary_summary: ValidationSummary, binary_html: str
) -> None:
    outside = binary_summary.card_mismatches
    assert outside
    assert binary_html.count('class="outside"') == len(outside)
    assert "Review before local use" in binary_html


def test_html_escapes_every_given_string() -> None:
    attack = '<script>alert("x")</script>'
    data = ValidationData(
        "binary",
        ("ok", "<i>bad</i>"),
        np.array([0, 1, 0, 1]),
        np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]]),
        extra={"<u>n</u>": 1.0},
    )
    html = report_html(
        validate(data, {}, n_boot=20),
        model_name=attack,
        model_version='"><img src=x onerror=alert(1)>',
        dataset=attack,
        created_at="<b>today</b>",
    )
    for raw in ("<script>", "<img src=x", "<b>today</b>", "<i>bad</i>", "<u>n</u>"):
        assert raw not in html
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in html
    assert "&lt;i&gt;bad&lt;/i&gt;" in html


def test_multiclass_html_maps_cjk_classes_to_chart_labels(multiclass_summary: ValidationSummary) -> None:
    html = report_html(
        multiclass_summary,
        model_name="triage",
        model_version="3",
        dataset="门诊 2024",
        created_at="2024-06-01",
    )
    for index, name in enumerate(DEPARTMENTS):
        assert name in html
        assert f"class {index}" in html
    assert len(DATA_URI.findall(html)) == 3


def test_chart_labels_are_ascii() -> None:
    assert chart_label(0, "呼吸科") == "class 0"
    assert chart_label(1, "pneumonia") == "pneumonia"
    assert chart_label(2, "cost $5") == r"cost \$5"  # a literal dollar, not mathtext


def test_pdf_has_a_text_page_and_the_charts(binary_summary: ValidationSummary) -> None:
    pdf = report_pdf(
        binary_summary,
        model_name="tianfu-imaging-pneumonia",
        model_version="1.2.0",
        dataset="本院胸片 $2024$",
        created_at="2024-05-01",
    )
    assert pdf.startswith(b"%PDF")
    assert pdf.rstrip().endswith(b"%%EOF")
    assert len(re.findall(rb"/Type\s*/Page\b", pdf)) == 4


def test_reports_render_one_class_data() -> None:
    data = ValidationData("binary", ("n", "p"), np.ones(5, np.int64), np.full((5, 2), 0.5))
    summary = validate(data, {"auc": 0.8}, n_boot=20)
    html = report_html(summary, model_name="m", model_version="1", dataset="d", created_at="2024-01-01")
    assert len(DATA_URI.findall(html)) == 3
    assert report_pdf(summary, model_name="m", model_version="1", dataset="d", created_at="x").startswith(
        b"%PDF"
    )
