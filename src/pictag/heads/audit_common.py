"""What both kinds' label audits (``multiclass_audit``, ``multilabel_audit``) share: checking
probabilities and running cleanlab quietly, with errors that name the head."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

TOLERANCE = 1e-6  # float32 rounding of a probability


def check_unit(head: Any, probs: np.ndarray) -> np.ndarray:
    """``probs`` clipped to [0, 1].

    float32 activations may overshoot by rounding; anything further is not a probability
    (logits passed by mistake), which cleanlab would reject without naming the head.

    Raises:
        ValueError: A value is not finite or lies outside [0, 1] beyond rounding.
    """
    if len(probs) and not (
        np.isfinite(probs).all() and probs.min() >= -TOLERANCE and probs.max() <= 1 + TOLERANCE
    ):
        raise ValueError(
            f"head {head.name!r}: probabilities must be in [0, 1] (activated outputs, not logits)"
        )
    return np.clip(probs, 0.0, 1.0)


@contextmanager
def quiet_cleanlab(head: Any) -> Iterator[None]:
    """Run cleanlab without its warnings, turning its input errors into ones naming the head.

    cleanlab warns once per class with "too few examples" to flag all its issues: on small or
    imbalanced data that is a screenful per call, and says nothing the findings do not (such a
    class simply gets fewer findings).

    Raises:
        ValueError: cleanlab rejected the input (its checks use ``assert`` as well as
            ValueError); the message names the head and keeps cleanlab's reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    except (ValueError, AssertionError) as error:
        raise ValueError(
            f"head {head.name!r}: cleanlab could not audit the labels: {error}"
        ) from error
