"""From a config to checked, split samples and resolved heads: what training and evaluation use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pictag.config import Config
from pictag.data.label_checks import untrained_labels
from pictag.data.leakage import warn_leaks
from pictag.data.schema import Head, Sample
from pictag.data.sources import read_samples
from pictag.data.splits import assign_splits
from pictag.data.transforms import hflip_for
from pictag.data.validate import CheckReport, apply_policy, check_data

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Checked samples split into train/val/test, and the heads resolved from them."""

    heads: dict[str, Head]
    splits: dict[str, list[Sample]]
    report: CheckReport


def prepare_data(
    config: Config,
    out_dir: Path | None = None,
    *,
    decode: bool = True,
    progress: bool = True,
    workdir: Path | None = None,
) -> PreparedData:
    """Read the source, run the checks, apply ``data.policy`` and split.

    ``config.heads`` is updated with the heads the source implies (e.g. a folder tree's single
    ``label`` head). The caller stores the split (:func:`pictag.run.write_splits`), so that
    evaluation and a resumed run use exactly the same images.

    Args:
        config: The job; its ``data`` section says where the images are and how to split them.
        out_dir: Where ``data.policy: skip`` writes ``skipped.csv``; None writes no file.
        decode: Decode every image to check it.
        progress: Show a progress bar while checking.
        workdir: Where built-in datasets are made.

    Raises:
        DataCheckError: ``data.policy`` is ``strict`` and the checks found errors.
    """
    source = read_samples(config.data, config.heads, workdir)
    config.heads = dict(source.heads)
    hashing = config.data.near_duplicates
    report = check_data(
        source, config.data, decode=decode, progress=progress, near_duplicates=hashing
    )
    kept = apply_policy(report, config.data.policy, out_dir)
    splits = assign_splits(kept, report.heads, config.data)
    log.info("split: %s", ", ".join(f"{k} {len(v)}" for k, v in splits.items()))
    # Only now are the splits final: a copy on each side of train/test inflates the test score.
    warn_leaks(report.near_duplicates, splits)
    for message in untrained_labels(splits["train"], report.heads):
        log.warning("%s", message)
    if config.train.hflip is None:  # its default follows the labels, known only now
        config.train.hflip, why = hflip_for({n: h.labels for n, h in report.heads.items()})
        if why:
            log.info("train.hflip: 0, %s; set train.hflip to flip anyway", why)
    return PreparedData(report.heads, splits, report)
