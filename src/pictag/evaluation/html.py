"""``report.html``: the evaluation report as one self-contained page a person can read offline.

The page holds a summary per head, training curves, confusion heatmaps (a table of 2x2 counts
for multilabel heads), PR/ROC curves, per-label bars worst first, the threshold table and a
grid of the worst mistakes. CSS is inline and every figure and thumbnail is a base64 data URI,
so the file opens with no network and can be mailed as it is. Every string that comes from the
data (run, label and head names, paths) is HTML-escaped; undefined metrics print as "–".
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any

from pictag import figures
from pictag.heads import HeadKind, get_kind
from pictag.htmlparts import DASH, figure, fmt, image_tag, table, thumbnail

SUMMARY_KEYS = ("mAP", "accuracy", "f1_macro", "f1_micro", "roc_auc_macro", "roc_auc_ovr", "ece")

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f6f7f9}
main{max-width:1280px;margin:0 auto;padding:16px 24px 48px}
h1{margin:8px 0 4px;font-size:24px}h2{margin:32px 0 8px;padding-top:8px;border-top:2px solid #dde}
h3{margin:18px 0 6px;font-size:15px;color:#444}
.meta{color:#555}.meta b{color:#222}.kind{font-size:13px;color:#666;font-weight:normal}
nav a{margin-right:12px}a{color:#2a5db0}
table{border-collapse:collapse;background:#fff;margin:4px 0 12px;font-size:13px}
th,td{border:1px solid #dde;padding:3px 8px;text-align:right}
th{background:#eef1f6}td:first-child,th:first-child{text-align:left}
tbody tr:nth-child(even){background:#fafbfd}
.scroll{max-height:520px;overflow-y:auto;display:inline-block}
.row{display:flex;flex-wrap:wrap;gap:20px;align-items:flex-start}
figure{margin:0 0 12px;background:#fff;border:1px solid #dde;padding:6px;display:inline-block;
max-width:100%;box-sizing:border-box}
figure img{max-width:100%;height:auto;display:block}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(200px,1fr));gap:12px}
.card{background:#fff;border:1px solid #dde;padding:8px;font-size:12px;overflow-wrap:anywhere}
.card img,.noimg{display:block;margin:0 auto 6px;max-width:160px;max-height:160px}
.card img.px{image-rendering:pixelated;max-width:100%;max-height:none;height:auto}
.boxed{position:relative;width:fit-content;margin:0 auto 6px}.boxed img{margin:0}
.boxed svg{position:absolute;inset:0;width:100%;height:100%}
.pair{display:flex;gap:4px;justify-content:center}.masked{margin:0;text-align:center}
.pair .card img,.pair img{max-width:120px;max-height:120px}
.noimg{width:160px;height:100px;background:#eee;color:#888;text-align:center;line-height:100px}
.path{font-weight:600}.dim{color:#777}.bad{color:#c62828;font-weight:600}
.miss{color:#c62828;text-decoration:underline dashed}
"""


def render_html(
    report: dict[str, Any], history: list[dict], thumbnails: dict[str, bytes] | None = None
) -> str:
    """The whole report page.

    Args:
        report: The ``report.json`` dict (see ``evaluate``).
        history: Lines of the run's ``metrics.jsonl``; empty leaves out the curves section.
        thumbnails: Image path -> PNG or JPEG bytes for the mistakes grid; None makes them here
            from ``report["mistakes"][i]["image"]`` (a file that cannot be read shows a blank).

    Returns:
        The HTML text, with no reference to anything outside itself.
    """
    heads = report.get("heads") or {}
    mistakes = report.get("mistakes") or []
    sections = [
        _header(report, heads, bool(mistakes)),
        _summary(report, heads),
        _curves(history or [], heads),
        *(_head(i, name, section) for i, (name, section) in enumerate(heads.items())),
        _mistakes(mistakes, thumbnails),
    ]
    title = escape(f"pictag report: {report.get('run', '')}")
    body = "\n".join(s for s in sections if s)
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{title}</title><style>{_CSS}</style></head>\n<body><main>\n{body}\n</main></body></html>\n"
    )


def _header(report: dict, heads: dict, has_mistakes: bool) -> str:
    facts = [
        ("run", report.get("run")),
        ("split", report.get("split")),
        ("images", report.get("n_images")),
        ("date", str(report.get("created") or "").replace("T", " ")[:19] or None),
    ]
    if report.get("tta"):
        facts.append(("TTA", "on"))
    meta = " · ".join(f"{k}: <b>{fmt(v)}</b>" for k, v in facts)
    links = [f'<a href="#head-{i}">{escape(name)}</a>' for i, name in enumerate(heads)]
    if has_mistakes:
        links.append('<a href="#mistakes">mistakes</a>')
    audit = report.get("audit")
    if audit:  # `pictag audit` ran on this run: its findings are one click away
        links.append(
            f'<a href="{escape(audit["html"])}">data audit: {audit["label_issues"]} possible '
            f"label errors, {audit['near_duplicates']} near-duplicate pairs "
            f"({audit['across_splits']} across splits)</a>"
        )
    return f"<h1>Evaluation report</h1><p class=meta>{meta}</p><nav>{''.join(links)}</nav>"


def _summary(report: dict, heads: dict) -> str:
    keys = [k for k in SUMMARY_KEYS if any(k in (s.get("metrics") or {}) for s in heads.values())]
    header = ["head", "kind", "images", "labels", *keys]
    rows = []
    for name, section in heads.items():
        metrics = section.get("metrics") or {}
        cells = [name, section.get("kind"), section.get("n"), len(section.get("labels") or [])]
        rows.append(cells + [metrics.get(k) if k in metrics else "" for k in keys])
    parts = ["<h2>Summary</h2>", table(header, rows)]
    if "all_heads_correct" in report:
        share = fmt(report["all_heads_correct"])
        parts.append(f"<p>Images with every head right: <b>{share}</b></p>")
    return "".join(parts)


def _curves(history: list[dict], heads: dict) -> str:
    primary = [f"{name}/{_kind(section).primary_metric}" for name, section in heads.items()]
    records = [r for r in history if isinstance(r, dict) and r.get("epoch") is not None]
    if len(records) == 1:  # a curve of one point says nothing: state the fit and its numbers
        return _one_fit(records[0], heads)
    png = figures.training_curves_png(history, primary)
    return "" if png is None else f"<h2>Training</h2>{figure(png, 'training curves')}"


def _one_fit(record: dict, heads: dict) -> str:
    """The training section of a run with one record: a linear probe (epoch 0, fitted once on
    cached features) or a single epoch, with the validation metrics of that fit."""
    if record.get("mode") == "linear-probe" or record.get("epoch") == 0:
        note = (
            "Linear probe: the heads were fitted once on cached backbone features, so there "
            "are no epochs to plot. Validation metrics of that fit:"
        )
    else:
        epoch = record.get("epoch")
        note = f"One record of training (epoch {epoch}): no curve to plot. Its metrics:"
    keys = ["loss", "score"]
    keys += [f"{name}/{key}" for name, s in heads.items() for key in _kind(s).summary_metrics]
    rows = [[key, _value(record, key)] for key in keys if {key, f"val/{key}"} & set(record)]
    if "train/loss" in record:
        rows.insert(0, ["train loss", record["train/loss"]])
    shown = table(["metric", "value"], rows) if rows else ""
    return f"<h2>Training</h2><p class=dim>{escape(note)}</p>{shown}"


def _value(record: dict, key: str) -> Any:
    # metrics.jsonl prefixes validation metrics with "val/"; a probe's own record may not
    return record.get(f"val/{key}", record.get(key))


def _head(index: int, name: str, section: dict) -> str:
    kind = section.get("kind", "")
    labels = section.get("labels") or []
    info = f"{escape(str(kind))}, {fmt(section.get('n'))} images, {len(labels)} labels"
    heading = f'<h2 id="head-{index}">{escape(name)} <span class=kind>({info})</span></h2>'
    return heading + "\n" + _kind(section).html(name, section)


def _kind(section: dict) -> HeadKind:
    return get_kind(str(section.get("kind", "")))


def _mistakes(mistakes: list[dict], thumbnails: dict[str, bytes] | None) -> str:
    if not mistakes:
        return ""
    cards = [_card(m, thumbnails) for m in mistakes]
    legend = (
        "<p class=dim>Worst first. <span class=bad>red</span>: wrong prediction; "
        "<span class=miss>underlined</span>: a true label that was missed. Boxes: true solid"
        " green, predicted dashed red. Masks: the true one left, the predicted one right.</p>"
    )
    return f'<h2 id="mistakes">Mistakes</h2>{legend}<div class=grid>{"".join(cards)}</div>'


def _card(mistake: dict, thumbnails: dict[str, bytes] | None) -> str:
    path = str(mistake.get("image", ""))
    data = thumbnails.get(path) if thumbnails is not None else thumbnail(path)
    image = image_tag(data, path) if data else "<div class=noimg>no image</div>"
    if data and mistake.get("boxes"):
        image = _placed(image, mistake["boxes"])
    lines = [
        image,
        f'<div class=path title="{escape(path)}">{escape(Path(path).name)}</div>',
        f"<div class=dim>{escape(str(mistake.get('where') or ''))} · loss "
        f"{fmt(mistake.get('loss'))}</div>",
    ]
    true, pred = mistake.get("true") or {}, mistake.get("pred") or {}
    scores = mistake.get("scores") or {}
    for head in dict.fromkeys([*true, *pred]):
        lines.append(_verdict(head, true.get(head), pred.get(head), scores.get(head)))
    return f"<div class=card>{''.join(lines)}</div>"


def _placed(image: str, places: dict[str, Any]) -> str:
    """The thumbnail with the heads' places drawn over it: boxes on it, or, for masks, two
    copies side by side, the true mask over one and the predicted mask over the other."""
    boxes = _overlay(places)
    masks = [found for found in places.values() if "true_mask" in found]
    if not masks:
        return f"<div class=boxed>{image}{boxes}</div>"
    copies = []
    for key, caption in (("true_mask", "true"), ("pred_mask", "predicted")):
        layers = "".join(
            f'<image href="{escape(found[key])}" x="0" y="0" width="1" height="1" '
            'preserveAspectRatio="none"/>'
            for found in masks
        )
        svg = f'<svg viewBox="0 0 1 1" preserveAspectRatio="none">{layers}</svg>'
        copies.append(
            f"<figure class=masked><div class=boxed>{image}{svg}{boxes}</div>"
            f"<figcaption class=dim>{caption}</figcaption></figure>"
        )
    return f"<div class=pair>{''.join(copies)}</div>"


def _overlay(places: dict[str, Any]) -> str:
    """SVG over a thumbnail: true boxes solid green, predicted ones dashed red, in fractions of
    the image (so the boxes fit the thumbnail at any size)."""
    rects = []
    for found in places.values():
        for item, style in [*((t, TRUE_BOX) for t in found.get("true", [])),
                            *((p, PRED_BOX) for p in found.get("pred", []))]:  # fmt: skip
            x1, y1, x2, y2 = item["box"]
            score = f" {fmt(item['score'])}" if "score" in item else ""
            rects.append(
                f'<rect x="{x1}" y="{y1}" width="{x2 - x1:.4f}" height="{y2 - y1:.4f}" {style}>'
                f"<title>{escape(str(item['label']))}{score}</title></rect>"
            )
    return f'<svg viewBox="0 0 1 1" preserveAspectRatio="none">{"".join(rects)}</svg>'


TRUE_BOX = 'fill="none" stroke="#16a34a" stroke-width="2" vector-effect="non-scaling-stroke"'
PRED_BOX = (
    'fill="none" stroke="#dc2626" stroke-width="2" stroke-dasharray="4 2" '
    'vector-effect="non-scaling-stroke"'
)


def _verdict(head: str, true: Any, pred: Any, score: Any) -> str:
    if isinstance(true, list) or isinstance(pred, list):
        true_text, pred_text = _tag_texts(true, pred or [], score)
    else:
        true_text = DASH if true is None else escape(str(true))
        pred_text = DASH if pred is None else _mark(pred, true is not None and pred != true)
        pred_text += "" if score is None else f" {fmt(score)}"
    return (
        f"<div><b>{escape(head)}</b>: true {true_text}<br>"
        f"<span class=dim>pred</span> {pred_text}</div>"
    )


def _tag_texts(true: list | None, pred: list, scores: Any) -> tuple[str, str]:
    """Tag lists with wrong predictions in red and missed true tags underlined."""
    if not isinstance(scores, list) or len(scores) != len(pred):
        scores = [None] * len(pred)
    true_set, pred_set = set(true or []), set(pred)
    shown_pred = [
        _mark(p, true is not None and p not in true_set) + ("" if s is None else f" {fmt(s)}")
        for p, s in zip(pred, scores, strict=True)
    ]
    shown_true = [_mark(t, t not in pred_set, "miss") for t in true or []]
    true_text = ", ".join(shown_true) or ("none" if true is not None else DASH)
    return true_text, ", ".join(shown_pred) or "none"


def _mark(label: Any, wrong: bool, css: str = "bad") -> str:
    text = escape(str(label))
    return f"<span class={css}>{text}</span>" if wrong else text
