"""Fitting linear heads on cached features: full-batch L-BFGS, with the L2 strength of each head
chosen on validation features from a small grid (a fit takes 0.3-3 s on a few thousand cached
feature rows, against minutes to extract them) and an optional refit on train+val."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Mapping

import torch
from torch import nn

log = logging.getLogger(__name__)

# The L2 strengths tried on validation (per head). With mean losses, scikit-learn's default
# C=1 on n images is 1 / (2n): 5e-4 for 1,000 images; the grid spans that by two decades
# either way, which covers a few hundred to a few hundred thousand images.
WEIGHT_DECAYS = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2)
DEFAULT_WEIGHT_DECAY = 1e-4  # without validation images to choose on
# Weaker strengths tried after the validation loss has risen this many times in a row: it falls
# and then rises along the grid (under- then over-fitting), and the weakest fits are the slowest
# (on utkface-5k's three heads the path stopped this way took 23-26 s instead of 43-46 s, with
# the same choices: every head's loss rose at each strength past its best; probe_speed.py).
PATH_PATIENCE = 2

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def fit_heads(
    heads: Mapping[str, nn.Module],
    features: torch.Tensor,
    targets: Mapping[str, torch.Tensor],
    losses: Mapping[str, LossFn],
    weight_decay: float | Mapping[str, float] = DEFAULT_WEIGHT_DECAY,
    max_iter: int = 200,
) -> dict[str, float]:
    """Fit every head on fixed features with full-batch L-BFGS (L2-regularised); return the
    final training loss of each head.

    Args:
        heads: Head name -> module (linear layers; any dropout is off in eval mode).
        features: ``[N, F]``.
        targets: Head name -> targets ``[N, ...]``.
        losses: Head name -> loss function of ``(logits, targets)``.
        weight_decay: One L2 strength for all heads, or one per head.
        max_iter: L-BFGS iterations.
    """
    result = {}
    for name, head in heads.items():
        head.eval()  # no dropout: the probe is a deterministic convex fit for linear heads
        wd = weight_decay[name] if isinstance(weight_decay, Mapping) else weight_decay
        result[name] = fit_head(head, features, targets[name], losses[name], wd, max_iter)
    return result


def fit_head(
    head: nn.Module,
    features: torch.Tensor,
    target: torch.Tensor,
    loss_fn: LossFn,
    weight_decay: float,
    max_iter: int = 200,
) -> float:
    """Fit one head in place; return its final (unregularised) training loss."""
    params = list(head.parameters())
    optimizer = torch.optim.LBFGS(
        params, lr=1.0, max_iter=max_iter, history_size=20, line_search_fn="strong_wolfe"
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(head(features), target)
        loss = loss + weight_decay * sum((p**2).sum() for p in params if p.ndim > 1)
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return float(loss_fn(head(features), target))


def choose_weight_decays(
    heads: Mapping[str, nn.Module],
    train: tuple[torch.Tensor, Mapping[str, torch.Tensor]],
    val: tuple[torch.Tensor, Mapping[str, torch.Tensor]],
    losses: Mapping[str, LossFn],
    grid: tuple[float, ...] = WEIGHT_DECAYS,
    patience: int = PATH_PATIENCE,
) -> dict[str, float]:
    """Each head's L2 strength: the grid value, of those tried, whose fit on ``train`` gives the
    lowest loss on ``val`` (the head's own loss, which is what the probe minimises; a ranking
    metric such as mAP is flat across neighbouring strengths on a small validation set, the
    loss is not).

    The heads are left fitted with their chosen strength. Strengths are tried from the
    strongest down, each fit starting from the previous one's weights (the weaker the L2, the
    closer the optimum to the last), which takes fewer L-BFGS steps than starting afresh; a
    head's path stops once its validation loss has risen ``patience`` times in a row (so the
    choice is the lowest loss among the strengths tried).
    """
    chosen = {}
    for name, head in heads.items():
        head.eval()
        best_loss, best_wd, best_state = math.inf, grid[0], None
        last, rises = math.inf, 0
        for wd in sorted(grid, reverse=True):
            fit_head(head, train[0], train[1][name], losses[name], wd)
            with torch.no_grad():
                loss = float(losses[name](head(val[0]), val[1][name]))
            if loss < best_loss:
                best_loss, best_wd, best_state = loss, wd, copy.deepcopy(head.state_dict())
            rises = rises + 1 if loss > last else 0
            last = loss
            if rises >= patience:
                break
        if best_state is not None:
            head.load_state_dict(best_state)
        chosen[name] = best_wd
    log.info(
        "linear probe: L2 chosen on val: %s",
        ", ".join(f"{name} {wd:g}" for name, wd in chosen.items()),
    )
    return chosen
