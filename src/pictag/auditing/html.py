"""``audit.html``: each finding with its image(s) side by side, for a person to judge."""

from __future__ import annotations

from html import escape
from typing import Any

from pictag.htmlparts import fmt, image_tag, thumbnail

STYLE = """
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 28px; }
.grid { display: flex; flex-wrap: wrap; gap: 12px; }
.card { border: 1px solid #ddd; border-radius: 6px; padding: 8px; width: 340px; }
.card img { max-width: 160px; max-height: 160px; margin-right: 4px; vertical-align: top; }
img.px { image-rendering: pixelated; }
.path { color: #666; font-size: 12px; word-break: break-all; }
.given { color: #b00; } .suggested { color: #070; font-weight: 600; }
.note { color: #555; }
"""
MAX_CARDS = 60  # per section: the page is for looking at, audit.json keeps every finding


def render_audit_html(audit: dict[str, Any]) -> str:
    """The page: what was audited, then label issues, near-duplicates and outliers."""
    sections = [
        _section(
            "Possible label errors",
            audit["label_issues"],
            _issue_card,
            "ranked by cleanlab on out-of-fold probabilities of linear heads; the lower the "
            "score, the likelier the given label is wrong",
        ),
        _section(
            "Near-duplicates",
            audit["near_duplicates"],
            _pair_card,
            "pairs of images with (nearly) the same perceptual hash or pretrained features: one "
            "photo resized, re-encoded, shifted, mirrored or cropped; across splits they leak "
            "the answer into validation or test",
        ),
        _section(
            "Outliers",
            audit["outliers"],
            _outlier_card,
            "images least like any other (lowest scores first)",
        ),
    ]
    head = (
        f"<h1>pictag audit: {escape(str(audit['run']))}</h1><p class=note>"
        f"{audit['n_images']} images, features of the {escape(audit['features'])} backbone, "
        f"{audit['folds']} folds. Nothing was changed: these are suggestions to review.</p>"
    )
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>pictag audit</title>"
        f"<style>{STYLE}</style></head><body>{head}{''.join(sections)}</body></html>"
    )


def _section(title: str, items: list[dict], card: Any, note: str) -> str:
    shown = items[:MAX_CARDS]
    more = f" (the first {len(shown)} of {len(items)})" if len(items) > len(shown) else ""
    cards = "".join(card(item) for item in shown) or "<p>None found.</p>"
    return (
        f"<h2>{escape(title)}: {len(items)}{more}</h2><p class=note>{escape(note)}</p>"
        f"<div class=grid>{cards}</div>"
    )


def _picture(path: str) -> str:
    data = thumbnail(path)
    return image_tag(data, path) if data else "<span class=note>(unreadable)</span>"


def _label(value: Any) -> str:
    return escape(", ".join(map(str, value)) if isinstance(value, list) else str(value))


def _issue_card(item: dict) -> str:
    return (
        f"<div class=card>{_picture(item['image'])}<div>{escape(item['head'])}: "
        f"<span class=given>{_label(item['given'])}</span> &rarr; "
        f"<span class=suggested>{_label(item['suggested'])}</span><br>"
        f"{escape(item.get('issue', ''))}, score {fmt(item['score'])}, {escape(item['split'])}"
        f"<div class=path>{escape(item['image'])}</div></div></div>"
    )


def _pair_card(item: dict) -> str:
    splits = " / ".join(item["splits"])
    mirrored = " (mirrored)" if item.get("flipped") else ""
    how = f"{fmt(item['distance'])} bits apart{mirrored}"
    if item.get("method") == "embedding":
        how = f"features at cosine {fmt(1 - item['distance'])}"
    return (
        f"<div class=card>{_picture(item['a'])}{_picture(item['b'])}<div>"
        f"{how}, splits {escape(splits)}"
        f"<div class=path>{escape(item['a'])}<br>{escape(item['b'])}</div></div></div>"
    )


def _outlier_card(item: dict) -> str:
    return (
        f"<div class=card>{_picture(item['image'])}<div>score {fmt(item['score'])}, "
        f"{escape(item['split'])}<div class=path>{escape(item['image'])}</div></div></div>"
    )
