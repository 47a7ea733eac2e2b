"""Looking up head kinds, counting labels, loss options, and what the heads package imports."""

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

import pictag.heads
from pictag.heads import (
    MISSING_CLASS,
    MISSING_TAG,
    MULTICLASS,
    MULTILABEL,
    LossOptions,
    get_kind,
    label_counts,
)


def test_get_kind_by_name() -> None:
    assert get_kind("multiclass") is MULTICLASS
    assert get_kind("multilabel") is MULTILABEL
    assert (MULTICLASS.primary_metric, MULTILABEL.primary_metric) == ("accuracy", "mAP")


def test_get_kind_error_names_the_valid_kinds() -> None:
    valid = r"\['detection', 'multiclass', 'multilabel', 'segmentation'\]"
    with pytest.raises(ValueError, match=rf"'multi_label'.*{valid}"):
        get_kind("multi_label")


def test_label_counts_by_kind_or_name() -> None:
    classes = np.array([1, 1, MISSING_CLASS, 0])
    np.testing.assert_array_equal(label_counts("multiclass", classes, 3), [1, 2, 0])
    tags = np.array([[1.0, MISSING_TAG], [1.0, 0.0]])
    np.testing.assert_array_equal(label_counts(MULTILABEL, tags, 2), [2, 0])
    with pytest.raises(ValueError, match="unknown head kind"):
        label_counts("regression", classes, 3)


@pytest.mark.parametrize(
    ("field", "value"),
    [("label_smoothing", 1.0), ("focal_gamma", -1.0), ("asl_gamma_neg", -0.5), ("asl_clip", 1.0)],
)
def test_loss_options_reject_out_of_range_values(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        LossOptions(**{field: value})


# The layers under pictag.heads (pyproject.toml's import-linter contract).
BELOW_HEADS = {"pictag", "pictag.config", "pictag.figures", "pictag.htmlparts"}


def test_heads_imports_only_torch_numpy_sklearn_and_stdlib() -> None:
    # cleanlab: the label audit (multiclass_audit, multilabel_audit), imported on first use;
    # torchvision (FCOS, NMS) and pycocotools (COCO evaluation): the detection kind's modules,
    # which pictag.heads imports only when a detection head trains or is scored;
    # segmentation_models_pytorch (FPN decoder, Dice) and PIL (mask PNGs): the segmentation
    # kind's, likewise imported on first use.
    allowed = {"torch", "numpy", "sklearn", "cleanlab", "torchvision", "pycocotools"}
    allowed |= {"segmentation_models_pytorch", "PIL"}
    allowed |= {"__future__", *sys.stdlib_module_names}
    for path in Path(pictag.heads.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                inside = name == "pictag.heads" or name.startswith("pictag.heads.")
                below = name in BELOW_HEADS or name.startswith("pictag.figures")
                assert inside or below or name.split(".")[0] in allowed, f"{path.name}: {name}"
