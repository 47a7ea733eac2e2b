"""report.html and its figures, from a hand-built report dict with three heads of each shape."""

from __future__ import annotations

import base64
import io
import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag import figures as plots
from pictag.evaluation.html import render_html

TAGS = ["desert", "mountain", "<b>&", "sea", "never"]
DIGITS = [f"digit_{i}" for i in range(10)]


def _pr_curve(ap: float) -> dict:
    recall = np.linspace(1.0, 0.0, 12)
    precision = np.clip(ap + (1 - ap) * (1 - recall) ** 2, 0, 1)
    return {"precision": precision.tolist(), "recall": recall.tolist()}


def _tags_head() -> dict:
    thresholds = [0.41, 0.37, 0.55, 0.62, 0.5]
    aps = [0.93, 0.71, 0.52, 0.88, None]
    per_label = []
    for i, label in enumerate(TAGS):
        undefined = aps[i] is None
        per_label.append({
            "label": label, "support": 0 if undefined else 10 + i, "ap": aps[i],
            "roc_auc": None if undefined else 0.9, "threshold": thresholds[i],
            "precision": None if undefined else 0.8 - 0.1 * i, "recall": 0.0 if undefined else 0.7,
            "f1": None if undefined else 0.75 - 0.1 * i, "confusion": [[80, 3 + i], [2, 15 - i]],
            "pr_curve": None if undefined else _pr_curve(aps[i]),
        })  # fmt: skip
    metrics = {"mAP": 0.76, "roc_auc_macro": 0.91, "f1_micro": 0.812, "f1_macro": 0.70,
               "hamming_loss": 0.051, "subset_accuracy": 0.6}  # fmt: skip
    at_half = {"f1_micro": 0.75, "f1_macro": 0.66, "hamming_loss": 0.07, "subset_accuracy": 0.52}
    return {"kind": "multilabel", "labels": TAGS, "n": 100, "thresholds": thresholds,
            "metrics": metrics, "metrics_at_0.5": at_half, "per_label": per_label}  # fmt: skip


def _gate_head() -> dict:
    fpr = list(np.linspace(0, 1, 20))
    return {
        "kind": "multiclass", "labels": ["closed", "open"], "n": 100,
        "metrics": {"accuracy": 0.9, "f1_macro": 0.89, "roc_auc_ovr": 0.95, "ece": 0.04},
        "per_label": [
            {"label": "closed", "support": 50, "precision": 0.92, "recall": 0.88, "f1": 0.9,
             "roc_auc": 0.95},
            {"label": "open", "support": 50, "precision": 0.88, "recall": 0.92, "f1": 0.9,
             "roc_auc": 0.95},
        ],
        "confusion": [[44, 6], [4, 46]],
        "binary": {
            "roc": {"fpr": fpr, "tpr": [x**0.3 for x in fpr]},
            "pr": {"precision": [0.5, 0.8, 0.9, 1.0], "recall": [1.0, 0.9, 0.5, 0.0]},
            "operating_point": {"threshold": 0.5, "fpr": 0.12, "tpr": 0.92, "precision": 0.885,
                                "recall": 0.92},
        },
    }  # fmt: skip


def _digit_head() -> dict:
    confusion = (np.eye(10, dtype=int) * 8 + 1).tolist()
    per_label = [{"label": d, "support": 17, "precision": 0.5, "recall": 8 / 17, "f1": 0.48,
                  "roc_auc": 0.9} for d in DIGITS]  # fmt: skip
    return {"kind": "multiclass", "labels": DIGITS, "n": 170, "confusion": confusion,
            "metrics": {"accuracy": 0.47, "top2_accuracy": 0.6, "f1_macro": 0.48,
                        "roc_auc_ovr": None}, "per_label": per_label}  # fmt: skip


def _report(tmp_path: Path) -> dict:
    mistakes = []
    for i, (true, pred) in enumerate([("open", "closed"), ("closed", "closed")]):
        path = tmp_path / f"img_{i}&x.png"
        Image.new("RGB", (40, 30), (200, 30 * i, 0)).save(path)
        mistakes.append({
            "image": str(path), "where": f"labels.csv:{i + 2}", "loss": 2.3 - i,
            "true": {"gate": true, "digit": "digit_3", "tags": ["sea", "trees"][: i + 1]},
            "pred": {"gate": pred, "digit": "digit_3", "tags": ["sea", "desert"]},
            "scores": {"gate": 0.91, "digit": 0.6, "tags": [0.8, 0.6]},
        })  # fmt: skip
    heads = {"tags": _tags_head(), "gate": _gate_head(), "digit": _digit_head()}
    return {"run": "runs/demo", "split": "test", "n_images": 100, "tta": False,
            "created": "2025-01-02T03:04:05", "heads": heads, "all_heads_correct": 0.4,
            "mistakes": mistakes}  # fmt: skip


HISTORY = [
    {"epoch": e, "train/loss": 1.0 / e, "val/loss": 1.2 / e, "val/score": 0.5 + 0.1 * e,
     "val/tags/mAP": 0.4 + 0.1 * e, "val/gate/accuracy": None if e == 2 else 0.8}
    for e in (1, 2, 3)
]  # fmt: skip


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self.img_srcs: list[str] = []

    def handle_data(self, data: str) -> None:
        self.chunks.append(data)

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag == "img":
            self.img_srcs.append(dict(attrs)["src"])


def _parse(page: str) -> _Text:
    parser = _Text()
    parser.feed(page)
    return parser


def _figures(page: str) -> list[bytes]:
    found = re.findall(r'<figure><img src="data:image/png;base64,([^"]+)"', page)
    return [base64.b64decode(data) for data in found]


@pytest.fixture(scope="module")
def page(tmp_path_factory) -> str:
    """The full page, rendered once: drawing the figures is most of a test's time."""
    return render_html(_report(tmp_path_factory.mktemp("report")), HISTORY)


def test_page_holds_every_head_label_and_plot(page):
    text = "\n".join(_parse(page).chunks)
    for name in ["tags", "gate", "digit", *TAGS, "closed", "open", *DIGITS]:
        assert name in text, name
    # curves; tags: bars + PR; gate: bars + confusion + PR/ROC; digit: bars + confusion
    figures = _figures(page)
    assert len(figures) == 8
    for png in figures:
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert "runs/demo" in text and "2025-01-02 03:04:05" in text
    assert "<h2>Training</h2>" in page


def test_threshold_table_and_tuned_vs_half(page):
    # label, threshold, precision, recall, F1, AP, support
    assert "<tr><td>desert</td><td>0.410</td><td>0.800</td><td>0.700</td><td>0.750</td>" in page
    # the label with no positives: undefined values are dashes, never 'None' or 'nan'
    assert "<tr><td>never</td><td>0.500</td><td>–</td><td>0.000</td><td>–</td><td>–</td>" in page
    assert "<tr><td>f1_micro</td><td>0.812</td><td>0.750</td></tr>" in page
    assert "<tr><td>hamming_loss</td><td>0.051</td><td>0.070</td></tr>" in page
    assert "None" not in page and "nan" not in page
    # the 2x2 counts of a multilabel label: TP FP FN TN
    assert "<tr><td>desert</td><td>15</td><td>3</td><td>2</td><td>80</td></tr>" in page


def test_user_strings_are_escaped_and_nothing_is_external(page):
    assert "&lt;b&gt;&amp;" in page
    assert "<b>&</td>" not in page and "<b>&<" not in page
    assert "img_0&amp;x.png" in page and "img_0&x.png" not in page
    assert "http://" not in page and "https://" not in page
    assert all(src.startswith("data:image/") for src in _parse(page).img_srcs)


def test_mistakes_grid_marks_wrong_labels_and_uses_given_thumbnails(tmp_path):
    report = _report(tmp_path)
    thumb = io.BytesIO()
    Image.new("RGB", (8, 8), (0, 0, 255)).save(thumb, format="JPEG")
    first = report["mistakes"][0]["image"]
    page = render_html(report, HISTORY, thumbnails={first: thumb.getvalue()})
    cards = page.split("<div class=card>")[1:]
    assert len(cards) == 2
    assert "data:image/jpeg;base64," in cards[0]
    assert "no image" in cards[1]  # not in the given thumbnails
    assert "<span class=bad>closed</span> 0.910" in cards[0]  # wrong class in red
    assert "<span class=bad>" not in cards[1].split("<b>gate</b>")[1].split("</div>")[0]
    assert "<span class=bad>desert</span> 0.600" in cards[0]  # a tag predicted but not true
    assert "<span class=miss>trees</span>" in cards[1]  # a true tag that was not predicted
    assert "<span class=miss>sea</span>" not in page
    assert page.index("img_0&amp;x.png") < page.index("img_1&amp;x.png")  # report order kept


def test_thumbnails_are_made_from_the_files_when_not_given(tmp_path):
    report = _report(tmp_path)
    report["mistakes"].append({**report["mistakes"][0], "image": str(tmp_path / "gone.png")})
    page = render_html(report, [])
    srcs = [s for s in _parse(page).img_srcs if s.startswith("data:image/jpeg")]
    assert len(srcs) == 2
    thumb = Image.open(io.BytesIO(base64.b64decode(srcs[0].split(",", 1)[1])))
    assert thumb.size == (40, 30) and max(thumb.size) <= 160
    assert page.count("no image") == 1


def test_renders_without_history_or_mistakes(tmp_path):
    report = _report(tmp_path)
    report["mistakes"] = []
    del report["all_heads_correct"]
    page = render_html(report, [])
    assert "<h2>Training</h2>" not in page and 'id="mistakes"' not in page
    assert len(_figures(page)) == 7
    assert "tags" in page and "digit_9" in page


def test_training_curves_need_a_loss_or_score():
    assert plots.training_curves_png([]) is None
    assert plots.training_curves_png([{"epoch": 1, "train/lr": 0.1}]) is None
    png = plots.training_curves_png([{"epoch": 1, "val/score": float("nan"), "train/loss": 0.3}])
    assert png.startswith(b"\x89PNG")


def test_pr_curves_only_where_the_report_has_them(tmp_path):
    report = _report(tmp_path)
    assert plots.binary_curves_png(report["heads"]["digit"]) is None
    no_curves = {**report["heads"]["tags"], "per_label": [{"label": "x", "pr_curve": None}]}
    assert plots.label_pr_png(no_curves) is None


def test_label_bars_sort_worst_first_with_undefined_last():
    rows = [{"label": "a", "ap": 0.9}, {"label": "b", "ap": None}, {"label": "c", "ap": 0.2}]
    assert [r["label"] for r in plots._worst_first(rows, "ap")] == ["c", "a", "b"]


def test_many_labels_keep_figures_bounded():
    n = 80
    labels = [f"$class {i}" for i in range(n)]  # '$' must not be read as mathtext
    rng = np.random.default_rng(0)
    confusion = rng.integers(0, 9, (n, n))
    heat = Image.open(io.BytesIO(plots.confusion_png(confusion, labels, "coco")))
    assert heat.size[0] <= 1600 and heat.size[1] <= 1500
    rows = [{"label": label, "ap": float(rng.random()), "f1": 0.5, "pr_curve": _pr_curve(0.5)}
            for label in labels]  # fmt: skip
    section = {"kind": "multilabel", "labels": labels, "per_label": rows}
    bars = Image.open(io.BytesIO(plots.label_bars_png(section, "ap", "f1")))
    assert bars.size[1] <= 1600
    assert plots.label_pr_png(section).startswith(b"\x89PNG")
