"""Backbone features of a run's images for the audit, and the out-of-fold probabilities of
linear heads fitted on them.

The features come from the run's *pretrained* backbone, not its fine-tuned one: a fine-tuned
network has seen the training labels, wrong ones included, and pulls the features of a
mislabelled image toward its given class -- the very error the audit looks for. Only a run
trained from scratch (no pretrained weights exist) is audited on its own backbone.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from sklearn.model_selection import KFold
from torch import nn

from pictag.data.pipeline import PreparedData
from pictag.data.schema import Sample
from pictag.evaluation.run_inference import eval_loader
from pictag.run import LoadedRun, build_model
from pictag.training.loop import make_objective
from pictag.training.probe import extract_features
from pictag.training.probe_fit import fit_heads
from pictag.training.runtime import Runtime

log = logging.getLogger(__name__)


def audit_features(
    run: LoadedRun, samples: list[Sample], runtime: Runtime, progress: bool = True
) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Pooled features ``[N, F]``, the encoded targets of each head, and which backbone gave
    them (``pretrained offline`` or ``the run's own``)."""
    config = run.config
    if config.model.pretrained == "none":
        model, source = run.model, "the run's own (trained from scratch: no pretrained weights)"
    else:
        model, _ = build_model(config.model, run.heads, config.heads)
        source = f"pretrained ({config.model.pretrained}), not the fine-tuned one"
    assert model is not None  # load_run always loads the model
    model.to(runtime.device)
    loader = eval_loader(run, samples)
    features, targets = extract_features(
        model, loader, runtime, config.train.channels_last, progress
    )
    return features.numpy(), {k: v.numpy() for k, v in targets.items()}, source


def out_of_fold_probs(
    run: LoadedRun,
    samples: list[Sample],
    features: np.ndarray,
    targets: dict[str, np.ndarray],
    folds: int = 5,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Each image's probabilities from linear heads fitted on the other folds (the linear
    probe's L-BFGS fit, each head with its kind's loss), so no image is scored by a head that
    saw its label.

    Raises:
        ValueError: Fewer images than folds.
    """
    if len(samples) < folds:
        raise ValueError(f"the audit needs at least {folds} images (one per fold)")
    data = PreparedData(run.heads, {"train": samples}, None)  # type: ignore[arg-type]
    objective = make_objective(run.config, data)
    x = torch.from_numpy(features).float()
    probs = {name: np.zeros((len(samples), head.num_labels)) for name, head in run.heads.items()}
    splitter = KFold(n_splits=folds, shuffle=True, random_state=seed)
    for fold, (fit_rows, held_rows) in enumerate(splitter.split(features)):
        # One linear layer per head, as the linear probe fits.
        heads = {name: nn.Linear(x.shape[1], head.num_labels) for name, head in run.heads.items()}
        fit_targets = {n: torch.from_numpy(t[fit_rows]) for n, t in targets.items()}
        fit_heads(heads, x[fit_rows], fit_targets, objective.losses)
        with torch.no_grad():
            for name, head in heads.items():
                logits = head(x[held_rows])
                probs[name][held_rows] = objective.kinds[name].activate(logits).numpy()
        log.debug("audit fold %d/%d fitted", fold + 1, folds)
    return probs
