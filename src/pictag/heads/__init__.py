"""Head kinds: what a ``multiclass`` or ``multilabel`` head means at every stage, from reading a
label to training, deciding, scoring, reporting and exporting.

Callers ask the kind instead of branching on its name::

    kind = get_kind(head.kind)
    loss_fn = kind.make_loss(LossOptions(name="asl", balance=True), counts, n_samples)
    probs = kind.activate(logits)
    params = kind.tune(probs, targets, head, head_config)
    decided = kind.decide(probs, params)
    scores = kind.metrics(probs, targets, params)
"""

from pictag.heads.boxes import Objects
from pictag.heads.detection import DETECTION
from pictag.heads.kinds import (
    MISSING_CLASS,
    MISSING_TAG,
    HeadKind,
    LossFn,
    LossOptions,
    Params,
)
from pictag.heads.labels import Head, resolve_head
from pictag.heads.labeltext import LabelError, RawLabel
from pictag.heads.multiclass import MULTICLASS
from pictag.heads.multilabel import MULTILABEL
from pictag.heads.registry import (
    KINDS,
    check_config,
    check_head_config,
    check_monitor,
    get_kind,
    higher_is_better,
    label_counts,
)

__all__ = [
    "DETECTION",
    "KINDS",
    "MISSING_CLASS",
    "MISSING_TAG",
    "MULTICLASS",
    "MULTILABEL",
    "Head",
    "HeadKind",
    "LabelError",
    "LossFn",
    "LossOptions",
    "Objects",
    "Params",
    "RawLabel",
    "check_config",
    "check_head_config",
    "check_monitor",
    "get_kind",
    "higher_is_better",
    "label_counts",
    "resolve_head",
]
