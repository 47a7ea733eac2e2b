"""What may be wrong with the card's numbers: the audit's findings and the known limits."""

from __future__ import annotations

from pathlib import Path

from pictag.export.card_facts import CardFacts
from pictag.export.markdown import number
from pictag.heads import get_kind

SMALL_TEST = 100  # fewer evaluated images than this: the card warns of wide intervals
TOP = 5  # audit findings listed by name, of each sort
# audit.json's lists: heading, and how one finding reads
FINDINGS = {
    "label_issues": (
        "Label issues",
        lambda i: (
            f"`{_name(i.get('image'))}` ({i.get('split')}): `{i.get('head')}` given "
            f"{i.get('given')}, suggested {i.get('suggested')} (score {number(i.get('score'))})"
        ),
    ),
    "near_duplicates": (
        "Near-duplicates",
        lambda p: (
            f"`{_name(p.get('a'))}` and `{_name(p.get('b'))}` ({' / '.join(p.get('splits', []))})"
        ),
    ),
    "outliers": (
        "Outliers",
        lambda o: f"`{_name(o.get('image'))}` ({o.get('split')}, score {number(o.get('score'))})",
    ),
}


def audit_section(facts: CardFacts) -> str:
    """The audit's counts and the first findings of each sort."""
    title, audit, counts = "## Audit\n\n", facts.audit, facts.audit_counts
    if audit is None or counts is None:
        return title + f"Not audited: run `pictag audit {facts.run_dir}`."
    text = (
        f"`pictag audit` ({audit.get('created', 'date unknown')}, {audit.get('n_images')} "
        f"images) found {counts['label_issues']} label issues, {counts['near_duplicates']} "
        f"near-duplicate pairs ({counts['across_splits']} across splits) and "
        f"{counts['outliers']} outliers."
    )
    for key, (heading, line) in FINDINGS.items():
        items = [line(item) for item in (audit.get(key) or [])[:TOP]]
        if items:
            text += f"\n\n{heading} (first {len(items)}):\n" + "\n".join(f"- {i}" for i in items)
    return title + text


def limits_section(facts: CardFacts) -> str:
    """What the numbers above do not promise."""
    sizes, evaluation, audit = facts.split_sizes or {}, facts.evaluation, facts.audit_counts or {}
    limits = [
        f"Trained on {_count(sizes, 'train')}images from the source above: images unlike them "
        "(other cameras, lighting, subjects) get answers that may be confidently wrong.",
        "Feed images preprocessed as under Model; another resize, crop or normalisation changes "
        "the probabilities.",
    ]
    for name, head in facts.run.heads.items():
        known = f"`{name}` knows only its {head.num_labels} labels"
        if get_kind(head.kind).exclusive:
            known += " and always answers one of them, even for an image that shows none"
        limits.append(known + ".")
    if any(facts.run.params.values()):
        limits.append(
            f"Thresholds were set on the {_count(sizes, 'val')}validation images: "
            "where labels are more or less frequent, precision and recall shift."
        )
    if facts.report is None:
        limits.append("Not evaluated: how well it does is unknown.")
    elif evaluation is not None and evaluation.split != "test":
        limits.append(
            f"No test split: the metrics are on the {evaluation.split} images the thresholds "
            "were tuned on, so they are optimistic."
        )
    if evaluation is not None and evaluation.n_images < SMALL_TEST:
        limits.append(
            f"Only {evaluation.n_images} evaluated images: the intervals are wide; treat the "
            "metrics as rough."
        )
    if audit.get("label_issues"):
        limits.append(f"{audit['label_issues']} labels look wrong (audit); metrics trust them.")
    if audit.get("across_splits"):
        limits.append(
            f"{audit['across_splits']} near-duplicate pairs span splits (audit): the test "
            "metrics may be optimistic."
        )
    return "## Known limits\n\n" + "\n".join(f"- {text}" for text in limits)


def _name(path: str | None) -> str:
    """An image's file name: the card may travel where the run's folders mean nothing."""
    return Path(path).name if path else "?"


def _count(sizes: dict[str, int], split: str) -> str:
    """``"1,234 "`` images of a split, or nothing when the run has no split file."""
    return f"{sizes[split]:,} " if split in sizes else ""
