"""Losses of both head kinds against torch references, with missing targets really skipped."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from pictag.heads import MISSING_CLASS, MISSING_TAG, MULTICLASS, MULTILABEL, LossOptions
from pictag.heads.losses import asymmetric_loss, soft_cross_entropy
from pictag.heads.multiclass import class_weights, to_soft
from pictag.heads.multilabel import pos_weights

B, C, L = 16, 5, 6


def _class_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, C, generator=generator) * 3
    targets = torch.randint(0, C, (B,), generator=generator)
    return logits.requires_grad_(), targets


def _tag_data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, L, generator=generator) * 3
    targets = (torch.rand(B, L, generator=generator) < 0.3).float()
    return logits.requires_grad_(), targets


# --- multiclass ---------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
@pytest.mark.parametrize("balance", [False, True])
def test_cross_entropy_matches_torch(smoothing: float, balance: bool) -> None:
    logits, targets = _class_data()
    counts = np.array([3, 10, 1, 0, 2])
    loss_fn = MULTICLASS.make_loss(LossOptions(label_smoothing=smoothing, balance=balance), counts)
    weight = torch.tensor(class_weights(counts), dtype=torch.float32) if balance else None
    expected = F.cross_entropy(logits, targets, weight=weight, label_smoothing=smoothing)
    torch.testing.assert_close(loss_fn(logits, targets), expected)


def test_cross_entropy_skips_missing_rows() -> None:
    logits, targets = _class_data()
    targets[[2, 7]] = MISSING_CLASS
    loss_fn = MULTICLASS.make_loss(LossOptions(label_smoothing=0.1))
    loss = loss_fn(logits, targets)
    keep = targets != MISSING_CLASS
    expected = F.cross_entropy(logits[keep], targets[keep], label_smoothing=0.1)
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert logits.grad[[2, 7]].abs().sum() == 0
    assert logits.grad[keep].abs().sum() > 0
    changed = logits.detach().clone()
    changed[[2, 7]] = 100.0
    torch.testing.assert_close(loss_fn(changed, targets), loss.detach())


@pytest.mark.parametrize("balance", [False, True])
def test_focal_with_gamma_zero_is_cross_entropy(balance: bool) -> None:
    logits, targets = _class_data(1)
    targets[3] = MISSING_CLASS
    counts = np.array([4, 1, 2, 8, 1])
    options = LossOptions(label_smoothing=0.1, balance=balance)
    focal = MULTICLASS.make_loss(LossOptions("focal", 0.1, balance, focal_gamma=0.0), counts)
    plain = MULTICLASS.make_loss(options, counts)
    torch.testing.assert_close(focal(logits, targets), plain(logits, targets))


def test_focal_matches_hand_formula() -> None:
    logits, targets = _class_data(2)
    loss = MULTICLASS.make_loss(LossOptions("focal", focal_gamma=2.0))(logits, targets)
    p_true = logits.softmax(1).gather(1, targets[:, None]).squeeze(1)
    expected = (-((1 - p_true) ** 2) * p_true.log()).mean()
    torch.testing.assert_close(loss, expected)
    plain = MULTICLASS.make_loss(LossOptions())(logits, targets)
    assert loss < plain  # focusing only ever shrinks each term


def test_soft_one_hot_equals_hard_targets_with_weights_and_smoothing() -> None:
    logits, targets = _class_data(3)
    targets[0] = MISSING_CLASS
    counts = np.array([5, 1, 3, 2, 9])
    loss_fn = MULTICLASS.make_loss(LossOptions(label_smoothing=0.2, balance=True), counts)
    torch.testing.assert_close(loss_fn(logits, to_soft(targets, C)), loss_fn(logits, targets))


def test_soft_cross_entropy_matches_torch_probability_targets() -> None:
    logits, _ = _class_data(4)
    probs = torch.rand(B, C).softmax(1)
    torch.testing.assert_close(soft_cross_entropy(logits, probs), F.cross_entropy(logits, probs))


def test_mixed_loss_is_mix_of_losses() -> None:
    logits, targets_a = _class_data(5)
    targets_b = targets_a.roll(1)
    loss_fn = MULTICLASS.make_loss(LossOptions())
    mixed = MULTICLASS.mix_targets(targets_a, targets_b, 0.3, C)
    expected = 0.3 * loss_fn(logits, targets_a) + 0.7 * loss_fn(logits, targets_b)
    torch.testing.assert_close(loss_fn(logits, mixed), expected)


def test_class_weights_from_counts() -> None:
    from sklearn.utils.class_weight import compute_class_weight

    labels = np.array([0] * 10 + [1] * 30 + [2] * 60)
    expected = compute_class_weight("balanced", classes=np.arange(3), y=labels)
    np.testing.assert_allclose(class_weights(np.bincount(labels)), expected)
    # An unseen class keeps a neutral weight and does not change the others' formula.
    np.testing.assert_allclose(class_weights(np.array([10, 0, 30])), [40 / 30, 1.0, 40 / 90])
    with pytest.raises(ValueError, match="needs label counts"):
        MULTICLASS.make_loss(LossOptions(balance=True))


def test_multiclass_rejects_multilabel_loss() -> None:
    with pytest.raises(ValueError, match=r"'asl'.*multiclass.*default"):
        MULTICLASS.make_loss(LossOptions("asl"))


# --- multilabel ---------------------------------------------------------------------------------


@pytest.mark.parametrize("balance", [False, True])
def test_bce_matches_torch(balance: bool) -> None:
    logits, targets = _tag_data()
    counts, n = np.array([1, 5, 0, 20, 50, 3]), 60
    loss_fn = MULTILABEL.make_loss(LossOptions(balance=balance), counts, n)
    pos_weight = torch.tensor(pos_weights(counts, n), dtype=torch.float32) if balance else None
    per_entry = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=pos_weight, reduction="none"
    )
    # Summed over the labels of an image, averaged over images.
    torch.testing.assert_close(loss_fn(logits, targets), per_entry.sum(1).mean())


@pytest.mark.parametrize("name", ["default", "focal", "asl"])
def test_multilabel_losses_skip_missing_entries(name: str) -> None:
    logits, targets = _tag_data(1)
    missing = torch.zeros(B, L, dtype=torch.bool)
    missing[0] = True  # a whole row
    missing[3, [1, 4]] = True  # single entries
    targets[missing] = MISSING_TAG
    loss_fn = MULTILABEL.make_loss(LossOptions(name))
    loss = loss_fn(logits, targets)
    loss.backward()
    assert logits.grad[missing].abs().sum() == 0
    assert logits.grad[~missing].abs().sum() > 0  # ASL's clip zeroes easy negatives only
    changed = logits.detach().clone()
    changed[missing] = -50.0
    torch.testing.assert_close(loss_fn(changed, targets), loss.detach())
    if name == "default":
        per_entry = F.binary_cross_entropy_with_logits(
            logits, targets.clamp(min=0), reduction="none"
        )
        rows_present = (~missing).any(1).sum()
        torch.testing.assert_close(loss, per_entry[~missing].sum() / rows_present)


def test_asl_with_zero_focusing_and_no_clip_is_bce() -> None:
    logits, targets = _tag_data(2)
    counts, n = np.array([2, 5, 1, 20, 9, 3]), 40
    asl = LossOptions("asl", balance=True, asl_gamma_neg=0, asl_gamma_pos=0, asl_clip=0)
    bce = LossOptions(balance=True)
    torch.testing.assert_close(
        MULTILABEL.make_loss(asl, counts, n)(logits, targets),
        MULTILABEL.make_loss(bce, counts, n)(logits, targets),
    )


def test_asl_matches_reference_implementation() -> None:
    """The formula of Ridnik et al.'s reference AsymmetricLoss, summed over labels and
    averaged over images."""
    logits, targets = _tag_data(3)
    gamma_neg, gamma_pos, clip = 4.0, 1.0, 0.05
    loss = asymmetric_loss(logits, targets, gamma_pos, gamma_neg, clip)
    prob = torch.sigmoid(logits)
    neg = (1 - prob + clip).clamp(max=1)
    log_terms = targets * prob.clamp(min=1e-8).log() + (1 - targets) * neg.clamp(min=1e-8).log()
    p_t = prob * targets + neg * (1 - targets)
    gamma = gamma_pos * targets + gamma_neg * (1 - targets)
    expected = -(log_terms * (1 - p_t).pow(gamma)).sum(1).mean()
    torch.testing.assert_close(loss, expected)


def test_asl_clip_discards_easy_negatives() -> None:
    logits = torch.tensor([[-4.0, 2.0]], requires_grad=True)  # p = 0.018 (easy), 0.88
    loss = asymmetric_loss(logits, torch.zeros(1, 2), 0.0, 0.0, clip=0.05)
    loss.backward()
    assert logits.grad[0, 0] == 0 and logits.grad[0, 1] > 0


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_bce_matches_torchvision(gamma: float) -> None:
    logits, targets = _tag_data(4)
    loss = MULTILABEL.make_loss(LossOptions("focal", focal_gamma=gamma))(logits, targets)
    per_entry = sigmoid_focal_loss(logits, targets, alpha=-1, gamma=gamma, reduction="none")
    expected = per_entry.sum(1).mean()
    torch.testing.assert_close(loss, expected)


def test_pos_weights_from_counts() -> None:
    weights = pos_weights(np.array([10, 0, 60, 1, 50]), 100)
    np.testing.assert_allclose(weights, [9.0, 1.0, 1.0, 99.0, 1.0])
    np.testing.assert_allclose(pos_weights(np.array([1]), 10_000), [100.0])  # clipped
    np.testing.assert_allclose(pos_weights(np.array([2, 2]), np.array([10, 4])), [4.0, 1.0])
    with pytest.raises(ValueError, match="smaller"):
        pos_weights(np.array([5]), 3)
    with pytest.raises(ValueError, match="n_samples"):
        MULTILABEL.make_loss(LossOptions(balance=True), np.array([1, 2]))


def test_multilabel_rejects_label_smoothing() -> None:
    with pytest.raises(ValueError, match="multiclass heads only"):
        MULTILABEL.make_loss(LossOptions(label_smoothing=0.1))


# --- both kinds ---------------------------------------------------------------------------------

ALL_MISSING = [
    (MULTICLASS, "default", torch.full((B,), MISSING_CLASS)),
    (MULTICLASS, "focal", torch.full((B,), MISSING_CLASS)),
    (MULTICLASS, "default", torch.full((B, C), MISSING_TAG)),
    (MULTILABEL, "default", torch.full((B, C), MISSING_TAG)),
    (MULTILABEL, "focal", torch.full((B, C), MISSING_TAG)),
    (MULTILABEL, "asl", torch.full((B, C), MISSING_TAG)),
]


@pytest.mark.parametrize(("kind", "name", "targets"), ALL_MISSING)
def test_all_missing_batch_gives_zero_with_graph(kind, name, targets) -> None:
    logits = torch.randn(B, C, requires_grad=True)
    counts = np.arange(1, C + 1)
    loss = kind.make_loss(LossOptions(name, balance=True), counts, 100)(logits, targets)
    assert loss.item() == 0.0
    assert loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros_like(logits))


@pytest.mark.parametrize("kind", [MULTICLASS, MULTILABEL])
def test_low_precision_logits_give_float32_loss(kind) -> None:
    logits, targets = _class_data() if kind is MULTICLASS else _tag_data()
    loss_fn = kind.make_loss(LossOptions())
    low = loss_fn(logits.detach().bfloat16(), targets)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, loss_fn(logits.detach(), targets), rtol=0.02, atol=0.02)
