"""Head kinds: what a ``multiclass`` or ``multilabel`` head means for loss, activation,
decoding, MixUp targets and validation metrics.

Callers ask the kind instead of branching on it::

    kind = get_kind(head.kind)
    loss_fn = kind.make_loss(LossOptions(name="asl", balance=True), counts, n_samples)
    loss = loss_fn(logits, targets)
    probs = kind.activate(logits)
"""

from pictag.heads.kinds import MISSING_CLASS, MISSING_TAG, HeadKind, LossFn, LossOptions
from pictag.heads.multiclass import MULTICLASS
from pictag.heads.multilabel import MULTILABEL
from pictag.heads.registry import KINDS, get_kind, label_counts

__all__ = [
    "KINDS",
    "MISSING_CLASS",
    "MISSING_TAG",
    "MULTICLASS",
    "MULTILABEL",
    "HeadKind",
    "LossFn",
    "LossOptions",
    "get_kind",
    "label_counts",
]
