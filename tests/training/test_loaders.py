from pathlib import Path

import numpy as np
import torch

from pictag.data.schema import Sample, resolve_head
from pictag.training.loaders import EpochSampler, _balance_weights
from pictag.training.runtime import Runtime


def _rt(rank=0, world=1):
    return Runtime(torch.device("cpu"), None, rank, world, rank)


def test_epoch_sampler_is_a_seeded_permutation_per_epoch():
    sampler = EpochSampler(10, seed=3, runtime=_rt())
    first = list(sampler)
    assert sorted(first) == list(range(10))
    assert list(sampler) == first  # same epoch -> same order (what a resumed run relies on)
    sampler.set_epoch(1)
    assert list(sampler) != first
    sampler.set_epoch(0)
    assert list(sampler) == first


def test_epoch_sampler_shards_ranks_evenly_and_covers_everything():
    shards = [list(EpochSampler(11, seed=0, runtime=_rt(r, 2))) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6  # padded so every rank takes the same steps
    assert set(shards[0]) | set(shards[1]) == set(range(11))
    single = list(EpochSampler(11, seed=0, runtime=_rt()))
    assert shards[0] == (single + single[:1])[0::2]


def test_balanced_weights_favour_rare_classes():
    raws = ["common"] * 90 + ["rare"] * 10
    head = resolve_head("c", "multiclass", raws)
    samples = [Sample(Path(f"{i}.png"), {"c": r}) for i, r in enumerate(raws)]
    weights = _balance_weights(samples, {"c": head})
    assert np.isclose(weights.sum(), 1.0)
    assert np.isclose(weights[:90].sum(), 0.5) and np.isclose(weights[90:].sum(), 0.5)
    sampler = EpochSampler(100, seed=0, runtime=_rt(), weights=weights)
    drawn = np.array(list(sampler))
    assert 0.3 < (drawn >= 90).mean() < 0.7  # ~half rare instead of 10 %


def test_balanced_weights_for_tags_use_the_rarest_tag():
    raws = [("a",)] * 8 + [("a", "b")] * 2
    head = resolve_head("t", "multilabel", raws)
    samples = [Sample(Path(f"{i}.png"), {"t": r}) for i, r in enumerate(raws)]
    weights = _balance_weights(samples, {"t": head})
    assert weights[9] > weights[0]
