"""pictag: image classification for every task kind -- multi-class, multi-label, multi-output.

From a folder of class sub-folders to a trained, evaluated model in three lines::

    import pictag

    pictag.train("photos/", "runs/photos")               # a folder, a YAML path or a dict
    report = pictag.evaluate("runs/photos")              # report.json + report.html
    print(pictag.predict("runs/photos", "cat.jpg")[0].heads)

The rest mirrors the command line; nothing needs importing from inner modules::

    config = pictag.load_config("job.yaml", ["train.epochs=5"])  # or a dict, or a folder
    result = pictag.train(config, "runs/job", overrides=["train.lr=3e-4"])
    found = pictag.lr_find(config, "lr-find")            # lr_find.png; found.suggestion
    predictor = pictag.Predictor.from_run("runs/job")    # keeps the model loaded
    labels = predictor.predict("photo.jpg")[0].heads["tags"].labels
    pictag.export("runs/job")                            # runs/job/model.onnx, parity-checked
    findings = pictag.audit("runs/job")                  # audit.json: label issues, leaks

Torch is imported only when one of these is used, so ``import pictag`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pictag.config import Config
    from pictag.evaluation.image_inputs import ImageInput
    from pictag.evaluation.predictor import Prediction, Predictor
    from pictag.export import ExportResult
    from pictag.training.lr_find import LRFindResult
    from pictag.training.trainer import TrainResult

from pictag.version import __version__

__all__ = [
    "Predictor",
    "__version__",
    "audit",
    "evaluate",
    "export",
    "load_config",
    "lr_find",
    "predict",
    "train",
]


def load_config(
    config: Config | Mapping[str, Any] | str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Config:
    """A checked config: every choice, range and cross-field rule, the head kinds' options and
    ``train.monitor`` included, so a mistake fails here rather than after an epoch.

    Args:
        config: A YAML path, an image folder (the defaults with ``data.images`` set to it), a
            dict shaped like the YAML file, a ``Config`` (checked as it is), or None for the
            defaults.
        overrides: ``section.key=value`` strings, as ``--set`` takes them.

    Raises:
        pictag.config.ConfigError: The message names the key and the valid values.
        TypeError: ``config`` is none of these.
    """
    from pictag.config import Config, config_from_dict, config_to_dict
    from pictag.config import load_config as load_yaml
    from pictag.config_raw import set_key
    from pictag.heads import check_config

    if isinstance(config, (str, Path)) and Path(config).is_dir():
        config = {"data": {"images": [str(config)]}}
    if not (config is None or isinstance(config, (str, Path, Mapping, Config))):
        raise TypeError(
            "config must be a YAML path, an image folder, a dict shaped like the YAML file "
            f"or a pictag Config, got {type(config).__name__}"
        )
    if config is None or isinstance(config, (str, Path)):
        result = load_yaml(config, list(overrides))
    else:
        raw = dict(config) if isinstance(config, Mapping) else config_to_dict(config)
        for item in overrides:
            set_key(raw, item)
        result = config_from_dict(raw)
    check_config(result)
    return result


def train(
    config: Config | Mapping[str, Any] | str | Path,
    out_dir: str | Path,
    *,
    overrides: Sequence[str] = (),
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a model and write its run folder (see :func:`pictag.training.trainer.train`).

    Args:
        config: A ``Config``, a dict shaped like the YAML file, a YAML path or an image folder
            (see :func:`load_config`); it is checked first and never changed. Ignored with
            ``resume`` (the run's own config is used).
        out_dir: The run folder.
        overrides: ``section.key=value`` strings, as ``--set`` takes them.
        resume: Continue the run in ``out_dir`` from its last completed epoch.
        overwrite: Replace a run already in ``out_dir`` (otherwise that is an error).
        progress: Show progress bars.
    """
    from pictag.training.trainer import train as _train

    if not resume:
        config = load_config(config, overrides)
    options = {"resume": resume, "overwrite": overwrite, "progress": progress}
    return _train(config, out_dir, **options)  # type: ignore[arg-type]


def evaluate(
    run_dir: str | Path,
    data: str | Path | None = None,
    *,
    split: str | None = None,
    tta: bool = False,
    out_dir: str | Path | None = None,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a run and write ``report.json`` and ``report.html`` (see
    :func:`pictag.evaluation.evaluate.evaluate_run`); returns the report."""
    from pictag.evaluation.evaluate import evaluate_run

    options = {"split": split, "tta": tta, "out_dir": out_dir, "progress": progress}
    return evaluate_run(run_dir, data, device=device, **options)


def predict(
    run_dir: str | Path,
    images: ImageInput | Sequence[ImageInput],
    *,
    device: str = "auto",
    **options: Any,
) -> list[Prediction]:
    """Predict every head of a run for one image or a list of them (paths, PIL images or bytes);
    ``options`` as :meth:`pictag.Predictor.predict` takes them (``top_k``, ``at_least_one``).
    For many calls keep a :class:`pictag.Predictor`: this loads the model each time."""
    from pictag.evaluation.predictor import Predictor

    return Predictor.from_run(run_dir, device).predict(images, **options)


def lr_find(
    config: Config | Mapping[str, Any] | str | Path,
    out_dir: str | Path = "lr-find",
    *,
    overrides: Sequence[str] = (),
    **options: Any,
) -> LRFindResult:
    """The learning-rate range test: ``lr_find.png`` and ``lr_find.csv`` in ``out_dir`` and a
    suggested ``train.lr`` (``.suggestion``); ``options``: ``start_lr``, ``end_lr``,
    ``num_iter``, ``progress`` (see :func:`pictag.training.lr_find.lr_find`)."""
    from pictag.training.lr_find import lr_find as _lr_find

    return _lr_find(load_config(config, overrides), out_dir, **options)


def audit(
    run_dir: str | Path,
    *,
    folds: int = 5,
    out_dir: str | Path | None = None,
    fix_csv: bool = False,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Find possible label errors, near-duplicates (leaks across splits) and outliers among a
    run's images; writes ``audit.json`` and ``audit.html`` (see :func:`pictag.auditing.audit_run`)
    and returns the findings. Nothing is changed; ``fix_csv`` writes a reviewed-later copy."""
    from pictag.auditing import audit_run

    options = {"folds": folds, "out_dir": out_dir, "fix_csv": fix_csv, "progress": progress}
    return audit_run(run_dir, **options, device=device)


def export(
    run_dir: str | Path,
    onnx_path: str | Path | None = None,
    torchscript_path: str | Path | None = None,
    **options: Any,
) -> ExportResult:
    """Export a run to ONNX (and TorchScript) with its labels and decisions in the file's
    metadata, checked against PyTorch (see :func:`pictag.export.export_run`)."""
    from pictag.export import export_run

    return export_run(run_dir, onnx_path, torchscript_path, **options)


def __getattr__(name: str) -> Any:
    # `pictag.Predictor` without importing torch on `import pictag`.
    if name == "Predictor":
        from pictag.evaluation.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'pictag' has no attribute {name!r}")
