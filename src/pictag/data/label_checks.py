"""The label half of `pictag check-data`: heads that cannot be resolved, unknown labels, rows with
no labels, labels too rare to split and a tag separator that looks wrong.

Each check adds its problems to a shared :class:`~pictag.data.report.Findings`, naming the row
and a fix; :func:`pictag.data.validate.check_data` runs them in order with the file checks.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pictag.config import HeadConfig
from pictag.data.problems import Problem
from pictag.data.report import EXAMPLES, Findings, sample_where
from pictag.data.schema import Head, LabelError, RawLabel, Sample, resolve_head
from pictag.data.sources_common import kind_names
from pictag.heads import KINDS, get_kind
from pictag.heads.labels import label_indices

if TYPE_CHECKING:
    from pictag.data.sources import SourceResult

_SEPARATORS = (",", ";", "|")
_SHARE = 0.2  # share of values holding a separator character that makes a head look mis-split


@dataclass
class LabelCounts:
    """What encoding every label found.

    Attributes:
        counts: Head -> label -> number of samples with it.
        missing: Head -> number of samples without a label for it.
        rows: (head, label) -> the first few sample indices with it, to name in messages.
        keys: Per sample, its encoded label of each head, compared to find conflicting duplicates.
    """

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    missing: dict[str, int] = field(default_factory=dict)
    rows: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    keys: list[list[Hashable]] = field(default_factory=list)


def resolve_heads(source: SourceResult, found: Findings) -> dict[str, Head]:
    """Resolve each head from all samples' raw labels; a head that cannot be is a problem."""
    heads = {}
    for name, config in source.heads.items():
        raws = [s.labels.get(name) for s in source.samples]
        try:
            heads[name] = _resolve(name, config, raws)
        except ValueError as err:  # options that do not fit, or a head with no labels at all
            fix = f"fix heads.{name} in the config, or the labels it reads"
            found.add(Problem("bad_head", f"heads.{name}", str(err), fix))
    return heads


def _resolve(name: str, config: HeadConfig, raws: list[RawLabel]) -> Head:
    options = {"labels": config.labels, "rename": config.rename, "bins": config.bins}
    return resolve_head(
        name,
        config.kind,
        raws,
        **options,
        min_count=config.min_count,
        other_label=config.other_label,
    )


def encode_labels(
    samples: Sequence[Sample], heads: dict[str, Head], found: Findings
) -> LabelCounts:
    """Encode every label, reporting unknown ones, and count the labels of each head."""
    result = LabelCounts(keys=[[] for _ in samples])
    fix = "correct this row's label, or remove the row"
    for name, head in heads.items():
        # Few distinct raw values repeat over many rows, and Head.encode rebuilds its index per
        # call: encode each distinct value once.
        cache: dict[Hashable, int | tuple[int, ...] | LabelError | None] = {}
        tally: Counter[int] = Counter()
        result.missing[name] = 0
        for index, sample in enumerate(samples):
            raw = sample.labels.get(name)
            raw_key = tuple(raw) if isinstance(raw, list) else raw
            if raw_key not in cache:
                cache[raw_key] = _encode(head, raw)
            value = cache[raw_key]
            if isinstance(value, LabelError):
                where = sample_where(sample)
                found.add(Problem("unknown_label", where, str(value), fix, path=sample.path), index)
                value = ("?", raw_key)  # still compared as itself for duplicates
            elif value is None:
                result.missing[name] += 1
            else:
                for label in label_indices(value):
                    tally[label] += 1
                    if len(result.rows[name, head.labels[label]]) < EXAMPLES:
                        result.rows[name, head.labels[label]].append(index)
            result.keys[index].append(value)
        result.counts[name] = {label: tally[i] for i, label in enumerate(head.labels)}
    return result


def _encode(head: Head, raw: RawLabel) -> int | tuple[int, ...] | LabelError | None:
    try:
        return head.encode(raw)
    except LabelError as err:
        return err


def check_unlabelled(
    samples: Sequence[Sample], configs: dict[str, HeadConfig], found: Findings
) -> None:
    """A row with no label for any head teaches nothing; one with only empty tag lists may."""
    for index, sample in enumerate(samples):
        states = {_state(sample.labels.get(n), c.kind) for n, c in configs.items()}
        if not configs or "labelled" in states:
            continue
        where = sample_where(sample)
        if "empty" in states:
            message = f"{sample.path.name} has no tags; fine only if it truly shows none of them"
            fix = "add the tags it shows, or keep it as an image with none"
            found.add(Problem("no_labels", where, message, fix, "warning", sample.path))
        else:
            message = f"{sample.path.name} has no label for any head ({', '.join(configs)})"
            fix = "fill in its labels, or remove the row"
            found.add(Problem("no_labels", where, message, fix, path=sample.path), index)


def _state(raw: RawLabel, kind: str) -> str:
    if raw is None:
        return "missing"
    if len(raw) if isinstance(raw, (tuple, list)) else str(raw).strip():
        return "labelled"
    known = KINDS.get(kind)  # an unknown kind is reported by resolve_heads
    return "empty" if known is not None and known.tags else "missing"


def check_rare(
    samples: Sequence[Sample],
    heads: dict[str, Head],
    labels: LabelCounts,
    least: int,
    found: Findings,
) -> None:
    """Report single-class heads, and labels with fewer than ``least`` images."""
    for name, head in heads.items():
        kind = get_kind(head.kind)
        if kind.exclusive and head.num_labels < 2:
            message = (
                f"head {name!r} has a single class ({head.labels[0]!r}): nothing to tell apart"
            )
            other = kind_names(lambda k: not k.exclusive)
            fix = f"add images of other classes, or make it heads.{name}.kind: {other}"
            found.add(Problem("single_class", f"heads.{name}", message, fix))
            continue
        for label, count in labels.counts[name].items():
            if count >= least:
                continue
            rows = [samples[i] for i in labels.rows[name, label]]
            more = ", ..." if count > len(rows) else ""
            where = ", ".join(sample_where(s) for s in rows) + more
            message = (
                f"head {name!r}: label {label!r} has {count} image{'s' * (count != 1)}, fewer "
                f"than data.min_per_label={least}, too few to split into train and validation"
            )
            fold = f"fold rare classes with heads.{name}.min_count: {least}, "
            fix = (
                f"add images of it, {fold if 'min_count' in kind.options else ''}or merge it into "
                f"another label with heads.{name}.rename: {{{label}: OTHER}}"
            )
            path = rows[0].path if count == 1 else None
            found.add(
                Problem("rare_label", where or f"heads.{name}", message, fix, "warning", path)
            )


def check_separators(
    samples: Sequence[Sample], configs: dict[str, HeadConfig], found: Findings
) -> None:
    """Warn when values look split wrongly: tag lists in a head whose labels are not tag lists,
    or a tag separator that never splits anything while another character would."""
    for name, config in configs.items():
        kind = KINDS.get(config.kind)
        if kind is None:
            continue  # an unknown kind is reported by resolve_heads
        values = [(s, s.labels.get(name)) for s in samples if s.labels.get(name) is not None]
        if not kind.tags:
            texts = [(s, v.strip()) for s, v in values if isinstance(v, str) and v.strip()]
            chars: Sequence[str] = _SEPARATORS
            tagged = kind_names(lambda k: k.tags and "separator" in k.options)
            advice = f"heads.{name}.kind: {tagged} and heads.{name}.separator: SEP"
            what = f"they look like tag lists, but the head is {kind.name}"
        elif config.separator is not None:
            tags = [(s, (v,) if isinstance(v, str) else tuple(v)) for s, v in values]
            if any(len(t) > 1 for _, t in tags):
                continue  # the separator does split values: it is right
            texts = [(s, t[0]) for s, t in tags if t]
            chars = [c for c in (*_SEPARATORS, " ") if c != config.separator]
            advice = f"heads.{name}.separator: SEP"
            what = f"yet no value splits into several tags on {config.separator!r}"
        else:
            continue
        hits = [(s, t) for s, t in texts if any(c in t for c in chars)]
        if len(hits) < 2 or len(hits) < _SHARE * len(texts):
            continue
        sep = Counter(c for _, t in hits for c in chars if c in t).most_common(1)[0][0]
        sample, example = next((s, t) for s, t in hits if sep in t)
        message = (
            f"head {name!r}: {len(hits)} of {len(texts)} values contain {sep!r} "
            f"(e.g. {example!r} here); {what}"
        )
        fix = "if an image can have several of these, set " + advice.replace("SEP", repr(sep))
        where = sample_where(sample)
        found.add(Problem("separator", where, message, fix, "warning", sample.path))


def untrained_labels(train: Sequence[Sample], heads: dict[str, Head]) -> list[str]:
    """A message for each label that no training image has (for a segmentation head: no
    training mask holds a pixel of the class), which the model therefore cannot learn; it can
    only appear in val or test, once the split is made."""
    messages = []
    for name, head in heads.items():
        seen: set[int] = set()
        for sample in train:
            try:
                seen.update(label_indices(head.encode(sample.labels.get(name))))
            except LabelError:
                continue  # reported by the checks already
        for index, label in enumerate(head.labels):
            if index not in seen:
                messages.append(
                    f"head {name!r}: no training image has {label!r} (only val or test do), so "
                    "the model cannot learn it; add training images with it, or drop it from "
                    f"heads.{name}.labels"
                )
    return messages
