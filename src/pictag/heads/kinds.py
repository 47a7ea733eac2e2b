"""What a head kind is: the protocol every kind implements, and the options of its loss.

A :class:`HeadKind` bundles everything that differs between kinds, from how a label is read to
how a decision is drawn in the report, so the rest of pictag asks the kind instead of branching
on its name.

Importing ``pictag.heads`` must stay cheap (numpy only): the config is checked against the
kinds before any work, and a mistake should cost a second, not the seconds torch, scikit-learn
and matplotlib take to import. The kinds' modules therefore import those where they are used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import Tensor

MISSING_CLASS = -100  # a multiclass target with no known class (torch's ignore_index)
MISSING_TAG = -1.0  # a multilabel entry with no known value; any negative value counts as missing
NEUTRAL = 0.5  # the decision threshold before tuning, and of a label with nothing to tune on

LossFn = Callable[["Tensor", "Tensor"], "Tensor"]


@dataclass(frozen=True)
class LossOptions:
    """How a head's loss is built.

    Attributes:
        name: ``default`` (cross-entropy for multiclass, BCE for multilabel), ``focal``, or
            ``asl`` (asymmetric loss, multilabel only).
        label_smoothing: Multiclass only: mass spread uniformly over all classes.
        balance: Reweight by label frequency: class weights ``n / (C * count)`` for multiclass,
            per-label ``pos_weight = n_neg / n_pos`` for multilabel.
        focal_gamma: Focusing exponent of the focal loss; 0 gives back the default loss.
        asl_gamma_neg: ASL focusing exponent on negatives.
        asl_gamma_pos: ASL focusing exponent on positives.
        asl_clip: ASL probability shift on negatives: a negative whose probability is below this
            costs nothing, which discards easy negatives.
    """

    name: str = "default"
    label_smoothing: float = 0.0
    balance: bool = False
    focal_gamma: float = 2.0
    asl_gamma_neg: float = 4.0
    asl_gamma_pos: float = 0.0
    asl_clip: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        for field_name in ("focal_gamma", "asl_gamma_neg", "asl_gamma_pos"):
            if getattr(self, field_name) < 0:
                raise ValueError(f"{field_name} must be >= 0, got {getattr(self, field_name)}")
        if not 0.0 <= self.asl_clip < 1.0:
            raise ValueError(f"asl_clip must be in [0, 1), got {self.asl_clip}")


Params = dict[str, Any]  # a head's decision parameters, JSON-ready (stored in pictag.json)


@dataclass(frozen=True)
class HeadKind:
    """Everything a head kind decides, from reading a label to drawing a report section.

    The rest of pictag loops over heads and asks their kind; nothing outside ``pictag.heads``
    compares kind names. ``head`` arguments are :class:`pictag.heads.labels.Head` objects and
    ``cfg`` arguments :class:`pictag.config.HeadConfig`.

    Attributes:
        name: The kind's name in configs and run folders.
        tags: Raw labels are tag lists: a CSV cell is split on a separator, a group of 0/1
            columns may feed the head, and an empty list is a label ("no tags"), not a gap.
        exclusive: Exactly one label per image: a split stratifies on the class, and a head
            with one class has nothing to tell apart.
        options: Head options (``heads.NAME.<option>``) that only some kinds take and this kind
            accepts, e.g. ``bins`` or ``columns``.
        losses: Loss names accepted in ``heads.NAME.loss``.
        parse: ``(text, separator) -> raw label`` of one non-empty CSV cell or file-name group.
        normalize: ``(head, raw) -> value``: renames, bins and folding applied, not yet checked
            against the head's labels; None for a missing label.
        to_target: ``(encoded, num_labels) -> target``: an encoded label (class index, tuple of
            tag indices, or None for missing) as the training target array.
        count_labels: ``(targets, num_labels)`` -> positives per class/label, missing skipped.
        count_known: ``targets -> n_samples`` for ``make_loss``: images (or, per label, entries)
            with a known target.
        sample_weights: ``(targets, num_labels) -> [N]`` sampling weights inversely
            proportional to label frequency (balanced sampling), unnormalised.
        make_loss: ``(options, counts=None, n_samples=None) -> loss_fn(logits, targets)``; the
            loss is a scalar mean over the images with present targets; hard or MixUp-soft
            targets are both accepted.
        activate: Logits -> probabilities, in float32.
        mix_targets: ``(targets_a, targets_b, lam, num_labels)`` -> soft targets for MixUp and
            CutMix, missing wherever either side is missing.
        default_params: ``(head, cfg) -> params``: the decision before any tuning.
        tune: ``(probs, targets, head, cfg) -> params`` chosen on validation outputs.
        decide: ``(probs [N, C], params) -> bool [N, C]``: the labels chosen for each image.
            ``params`` may also hold the prediction-time keys ``top_k`` and ``at_least_one``.
        metric_names: The names ``metrics`` returns, in order (``train.monitor`` takes
            ``HEAD/NAME``).
        primary_metric: Selects checkpoints and stops early when ``train.monitor`` is auto.
        lower_is_better: Metric names where lower is better.
        summary_metrics: The few metrics shown in terminal summaries.
        metrics: ``(probs, targets, params) -> {name: float}``, the one implementation used by
            validation, ``report.json``, the HTML report and the benchmarks; ``nan`` where
            undefined.
        section: ``(probs, targets, labels, params) -> dict``, the head's ``report.json``
            section; its ``metrics`` are ``metrics(...)``.
        image_loss: ``(probs, targets) -> [N]`` per-image loss for ranking mistakes (0 where
            the target is missing).
        label_issues: ``(head, probs [N, C], targets [N...]) -> [finding, ...]``: rows whose
            given label looks wrong (``pictag audit``), found by cleanlab's confident learning
            on out-of-fold probabilities and targets as this kind encodes them (rows with a
            missing target left out). A finding is a dict: ``index`` (row in the given arrays),
            ``given`` and ``suggested`` (a label name, or a list of tag names), ``score``
            (label quality in [0, 1], low = likely wrong) and ``issue`` (what differs, in
            words); most likely wrong first. Raises ValueError when the labels leave nothing
            to compare (fewer than two classes, no tag both given and not given).
        judge: ``(decided, targets) -> (known [N], right [N])``: which images have a target and
            whether the decision matches it.
        describe: ``(head, probs_row, target_row, decided_row) -> (true, pred, scores)`` of one
            image, in label names, for the mistakes grid.
        html: ``(name, section) -> str``, the head's part of ``report.html``.
        plan_note: ``(head, cfg) -> str | None``: a choice pictag made for the head that the
            user should hear of when training starts (e.g. which class is positive).
        report_text: ``(name, section) -> str``, the head's per-label table (and confusion) as
            plain text, which ``pictag evaluate`` prints after its summary.
        export_meta: ``(head, params) -> dict``: what an exported model's consumer needs to
            decide as pictag does (activation, decision rule, its parameters).
        text_lines: ``scores -> int``: lines of text ``draw`` writes beside the image.
        draw: ``(fig, image_axes, title, labels, scores, top, objects=, mask=) -> next_top``:
            draws one image's decision (``pictag predict --show``): beside the image for
            image-level kinds, on it (the prediction's ``objects`` or ``mask``) for kinds that
            locate things.
        from_objects: ``Objects -> raw label``: what the head takes from an image's object
            annotations (VOC, COCO, YOLO, box CSV); None when the kind cannot read them.
        spatial: Targets and outputs are places in the image (boxes, masks): the image is resized
            whole rather than cropped, targets move with every geometric augmentation, and the
            head reads the feature pyramid, so it has no linear probe and no MixUp.
        make_module: ``(channels, num_labels) -> nn.Module`` mapping the backbone's feature
            maps (``channels`` per map, finest first) to the head's outputs; None for a linear
            layer on pooled features.
        wrap_target: ``(target, (h, w)) -> structure`` of torchvision tv_tensors (boxes, a
            mask) that v2 transforms move with an image of that size; None for image-level
            kinds.
        unwrap_target: ``(structure, (h, w)) -> target`` back after the transforms.
        predict_entry: ``(head, probs_row, params, (width, height)) -> dict`` of one image's
            prediction: ``labels``, ``scores`` and ``objects`` (boxes in the original image's
            pixels) or ``mask`` (a class-index PNG of its pixels); None when labels and scores
            say all.
        places: ``(head, target_row, decided_row) -> {"true": [...], "pred": [...]}``: where
            the true and decided objects of one image are (``{label, box}`` with the box in
            fractions of the width and height, ``score`` for predictions), drawn on the
            report's mistakes; or ``{"true_mask": uri, "pred_mask": uri}``, coloured PNG data
            URIs of the two masks; None for image-level kinds.
    """

    name: str
    tags: bool
    exclusive: bool
    options: frozenset[str]
    losses: tuple[str, ...]
    parse: Callable[[str, str | None], Any]
    normalize: Callable[[Any, Any], Any]
    to_target: Callable[[Any, int], np.ndarray]
    count_labels: Callable[[np.ndarray, int], np.ndarray]
    count_known: Callable[[np.ndarray], Any]
    sample_weights: Callable[[np.ndarray, int], np.ndarray]
    make_loss: Callable[..., LossFn]
    activate: Callable[[Tensor], Tensor]
    mix_targets: Callable[[Tensor, Tensor, Any, int], Tensor]
    default_params: Callable[[Any, Any], Params]
    tune: Callable[[np.ndarray, np.ndarray, Any, Any], Params]
    decide: Callable[[np.ndarray, Params], np.ndarray]
    metric_names: tuple[str, ...]
    primary_metric: str
    lower_is_better: frozenset[str]
    summary_metrics: tuple[str, ...]
    metrics: Callable[[np.ndarray, np.ndarray, Params], dict[str, float]]
    section: Callable[[np.ndarray, np.ndarray, list[str], Params], dict[str, Any]]
    image_loss: Callable[[np.ndarray, np.ndarray], np.ndarray]
    label_issues: Callable[[Any, np.ndarray, np.ndarray], list[dict[str, Any]]]
    judge: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]
    describe: Callable[[Any, np.ndarray, np.ndarray, np.ndarray], tuple[Any, Any, Any]]
    html: Callable[[str, dict[str, Any]], str]
    report_text: Callable[[str, dict[str, Any]], str]
    plan_note: Callable[[Any, Any], str | None]
    export_meta: Callable[[Any, Params], dict[str, Any]]
    text_lines: Callable[[Any], int]
    draw: Callable[..., float]
    from_objects: Callable[[Any], Any] | None = None
    spatial: bool = False
    make_module: Callable[..., Any] | None = None
    wrap_target: Callable[..., Any] | None = None
    unwrap_target: Callable[..., Any] | None = None
    predict_entry: Callable[..., dict[str, Any]] | None = None
    places: Callable[..., dict[str, Any]] | None = None


def untuned_threshold(cfg: Any) -> float:
    """A head's threshold before tuning: ``threshold_target`` with ``threshold_by: fixed``,
    else ``NEUTRAL``; ``cfg`` may be None (a head with no config: the default)."""
    if getattr(cfg, "threshold_by", "f1") == "fixed":
        return float(cfg.threshold_target)
    return NEUTRAL


def check_loss_name(options: LossOptions, kind: str, valid: tuple[str, ...]) -> None:
    """Raise a ValueError naming the valid losses when ``options.name`` is not one of them."""
    if options.name not in valid:
        raise ValueError(f"loss {options.name!r} is not for {kind} heads; use one of {valid}")


def as_counts(counts: np.ndarray | None) -> np.ndarray:
    """Counts as a float64 vector, with a message when balancing was asked for without them."""
    if counts is None:
        raise ValueError("balance=True needs label counts from the training targets")
    counts = np.asarray(counts, dtype=np.float64)
    if counts.ndim != 1 or (counts < 0).any():
        raise ValueError(f"counts must be a 1-D vector of non-negative counts, got {counts}")
    return counts


def lam_column(lam: float | Tensor, like: Tensor) -> Tensor:
    """The MixUp weight as a tensor broadcasting over ``like [B, C]``: a scalar or one per row."""
    import torch  # deferred: a config check must not wait seconds for torch

    lam = torch.as_tensor(lam, dtype=like.dtype, device=like.device)
    return lam.view(-1, 1) if lam.ndim == 1 else lam


def as_probs(probs: np.ndarray | Tensor) -> np.ndarray:
    """Probabilities ``[N, C]`` as a float64 array (CPU tensors accepted)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2:
        raise ValueError(f"probabilities must be [N, C], got shape {probs.shape}")
    return probs
