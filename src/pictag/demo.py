"""``pictag demo``: train on the built-in digits data for each task kind and print a table.

The data comes from the handwritten digits that scikit-learn ships, so nothing is downloaded;
the small CNN trains from scratch on the CPU in about two minutes for all three tasks.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pictag.config import Config, DataConfig, HeadConfig, ModelConfig, TrainConfig
from pictag.data.builtin import make_builtin, task_heads
from pictag.data.builtin_describe import describe as describe_builtin
from pictag.data.builtin_masks import MASK_VALUES
from pictag.heads import get_kind

log = logging.getLogger(__name__)

DEMO_TASKS = ("digits", "multilabel", "multioutput", "detection", "segmentation")
IMAGE_SIZE = 32  # px: the 8x8 source digits need no more
# Boxes: the small CNN gives no feature pyramid, so a detector starts from the offline
# pretrained Lite0; at 64 px a canvas's digits span 5-30 px. 600 canvases keep it to ~1 min.
DENSE_BACKBONE, DENSE_IMAGE_SIZE, DENSE_EPOCHS, DENSE_IMAGES = "tf_efficientnet_lite0", 64, 1, 600


def demo_config(task: str, data_dir: Path, epochs: int | None = None) -> Config:
    """The config the demo trains with: a small CNN from scratch, no flips (digits have a side);
    a task with boxes: the dense probe on pretrained Lite0's feature maps, then fine-tuning."""
    dense = any(get_kind(kind).spatial for kind in task_heads(task).values())
    built = make_builtin(task, data_dir, n_images=DENSE_IMAGES if dense else None)
    masks = {}
    if built.masks_dir is not None:  # each head reads the canvases' masks
        masks = {"masks": str(built.masks_dir), "mask_values": dict(MASK_VALUES)}
    heads = {
        name: HeadConfig(kind=kind, separator=" " if get_kind(kind).tags else None, **masks)
        for name, kind in built.heads.items()
    }
    model = ModelConfig(
        backbone="small_cnn", pretrained="none", image_size=IMAGE_SIZE, drop_rate=0.1
    )
    if dense:
        model = ModelConfig(
            backbone=DENSE_BACKBONE, pretrained="offline", image_size=DENSE_IMAGE_SIZE
        )
    data = DataConfig(
        format=built.labels_format, images=[str(built.root)], labels=str(built.labels_csv)
    )
    if built.masks_dir is not None:
        data = DataConfig(format="masks", images=[str(built.root / "images")])
    return Config(
        data=data,
        heads=heads,
        model=model,
        train=TrainConfig(
            epochs=epochs or (DENSE_EPOCHS if dense else 6),
            mode="auto" if dense else "fine-tune",
            batch_size=64,
            lr=3e-3 if not dense else 1e-3,
            backbone_lr_scale=None if dense else 1.0,
            weight_decay=0.01,
            warmup_epochs=0.5,
            augment="none",
            hflip=0.0,
        ),
    )


def run_demo(
    out_dir: Path,
    tasks: list[str] | None = None,
    epochs: int | None = None,
    data_only: bool = False,
) -> str:
    """Build the built-in data and (unless ``data_only``) train one run per task.

    Returns:
        A text table of the results (or the data statistics).
    """
    from pictag.run import read_splits
    from pictag.training.trainer import train

    lines = []
    rows = [("task", "heads", "train/val", "epochs", "seconds", "validation metrics")]
    chosen = tasks or list(DEMO_TASKS)
    for number, task in enumerate(chosen, 1):
        data_dir = out_dir / "data" / task
        if data_only:
            lines.append(describe_builtin(make_builtin(task, data_dir)))
            continue
        config = demo_config(task, data_dir, epochs)
        log.info("demo %d/%d: %s (%d epochs)", number, len(chosen), task, config.train.epochs)
        start = time.perf_counter()
        # The demo's runs are scratch: each `pictag demo` replaces the last one's.
        result = train(config, out_dir / "runs" / task, overwrite=True, progress=False)
        seconds = time.perf_counter() - start
        heads = ", ".join(f"{n} ({h.kind})" for n, h in config.heads.items())
        split = _split_sizes(read_splits(result.run_dir))
        rows.append(
            (
                task,
                heads,
                split,
                str(config.train.epochs),
                f"{seconds:.0f}",
                _metrics(result.metrics),
            )
        )
    if data_only:
        return "\n\n".join(lines)
    return _table(rows) + f"\n\nruns written to {out_dir / 'runs'}"


def _metrics(metrics: dict[str, float]) -> str:
    keep = ("accuracy", "mAP", "f1_macro", "map", "map50", "miou")
    parts = [f"{k}={v:.3f}" for k, v in metrics.items() if k.split("/")[-1] in keep]
    return " ".join(parts)


def _split_sizes(splits: dict[str, list[Path]]) -> str:
    return f"{len(splits['train'])}/{len(splits['val'])}"


def _table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)
