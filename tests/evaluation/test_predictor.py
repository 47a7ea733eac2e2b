from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pictag.data.dataset import ImageDataset
from pictag.data.schema import Sample
from pictag.data.transforms import decode_image, eval_transform
from pictag.evaluation.inference import predict_logits, probabilities
from pictag.evaluation.predictor import (
    CPU_BATCH,
    GPU_BATCH,
    HeadPrediction,
    Prediction,
    Predictor,
)
from pictag.run import load_run


@pytest.fixture(scope="module")
def predictor(tiny_run):
    return Predictor.from_run(tiny_run)


@pytest.fixture(scope="module")
def images(tiny_run):
    return sorted((tiny_run.parent / "data" / "images").glob("*.png"))[:4]


def _scores(prediction: Prediction) -> dict[str, float]:
    """Every score as ``head/label`` -> probability (pytest.approx needs a flat dict)."""
    return {
        f"{name}/{label}": score
        for name, head in prediction.heads.items()
        for label, score in head.scores.items()
    }


def test_path_pil_bytes_and_file_give_the_same_prediction(predictor, images):
    path = images[0]
    with Image.open(path) as opened:
        inputs = [str(path), path, opened, path.read_bytes(), io.BytesIO(path.read_bytes())]
        results = predictor.predict(inputs)
    assert [r.error for r in results] == [None] * 5
    assert results[0].source == str(path) and results[2].source == str(path)
    assert results[3].source == "<bytes[3]>" and results[4].source == "<file[4]>"
    for other in results[1:]:
        assert _scores(other) == pytest.approx(_scores(results[0]), abs=1e-6)
    single = predictor.predict(str(path))  # one image, not a list
    assert len(single) == 1 and _scores(single[0]) == pytest.approx(_scores(results[0]))


def test_decisions_and_scores(predictor, images):
    [result] = predictor.predict(images[0])
    colour, tags = result.heads["colour"], result.heads["tags"]
    assert isinstance(colour, HeadPrediction) and colour.kind == "multiclass"
    assert set(colour.scores) == {"blue", "green", "red"}
    values = list(colour.scores.values())
    assert values == sorted(values, reverse=True) and sum(values) == pytest.approx(1.0, abs=1e-5)
    assert colour.labels == [next(iter(colour.scores))]  # top-1
    assert tags.kind == "multilabel" and len(tags.scores) == 4
    labels, cuts = predictor.heads["tags"].labels, predictor.params["tags"]["thresholds"]
    thresholds = dict(zip(labels, cuts, strict=True))
    assert tags.labels == [k for k, v in tags.scores.items() if v >= thresholds[k]]


def test_top_k_limits_scores_and_picks_k_tags(predictor, images):
    [result] = predictor.predict(images[1], top_k=2)
    assert len(result.heads["colour"].scores) == 2 and len(result.heads["colour"].labels) == 1
    tags = result.heads["tags"]
    assert len(tags.labels) == 2 and list(tags.scores) == tags.labels
    with pytest.raises(ValueError, match="top_k"):
        predictor.predict(images[1], top_k=0)


def test_unreadable_file_in_a_batch_is_reported_and_the_rest_predicted(predictor, images, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    missing = tmp_path / "missing.jpg"
    inputs = [images[0], broken, images[1], missing, images[2]]
    results = predictor.predict(inputs, batch_size=2)
    assert [r.source for r in results] == [str(p) for p in inputs]
    assert [r.error is None for r in results] == [True, False, True, False, True]
    assert "broken.png" in results[1].error and "truncated" in results[1].error
    assert "missing.jpg" in results[3].error and results[3].heads == {}
    alone = predictor.predict(images[2])[0]
    assert _scores(results[4]) == pytest.approx(_scores(alone), abs=1e-6)


def test_default_batch_is_small_on_a_cpu_and_large_on_a_gpu(tiny_run, images, monkeypatch):
    predictor = Predictor.from_run(tiny_run, "cpu", "torch")
    sizes: list[int] = []

    def spy(batch: torch.Tensor) -> dict[str, np.ndarray]:  # the model call, on no device
        sizes.append(len(batch))
        return {
            name: np.full((len(batch), len(head.labels)), 1 / len(head.labels), np.float32)
            for name, head in predictor.heads.items()
        }

    monkeypatch.setattr(predictor, "probabilities", spy)
    inputs = images * 5  # 20 images
    results = predictor.predict(inputs)
    assert sizes == [CPU_BATCH, CPU_BATCH, 20 - 2 * CPU_BATCH]
    assert [r.source for r in results] == [str(p) for p in inputs]
    sizes.clear()
    predictor.device = torch.device("cuda")  # only the default batch asks the device
    predictor.predict(inputs)
    assert sizes == [20] and GPU_BATCH >= 20
    sizes.clear()
    predictor.predict(inputs, batch_size=6)  # the caller's size wins
    assert sizes == [6, 6, 6, 2]


def test_unsupported_input_type_raises(predictor):
    with pytest.raises(TypeError, match="item 0"):
        predictor.predict([3.5])


def test_in_memory_image_modes_match_the_saved_file(predictor, tmp_path):
    grey = Image.fromarray(np.arange(400, dtype=np.uint8).reshape(20, 20) % 251, mode="L")
    grey.save(tmp_path / "grey.png")
    from_file, from_memory = predictor.predict([tmp_path / "grey.png", grey])
    assert from_memory.source == "<PIL image[1]>"
    assert _scores(from_memory) == pytest.approx(_scores(from_file), abs=1e-6)


def test_predictions_match_the_evaluation_pipeline(tiny_run, predictor, images):
    run = load_run(tiny_run)
    samples = [Sample(path, {}) for path in images]
    dataset = ImageDataset(samples, run.heads, run.preprocess, eval_transform(run.preprocess))
    logits, _ = predict_logits(run.model, DataLoader(dataset, batch_size=3))
    probs = probabilities(run.heads, logits)
    results = predictor.predict(images, batch_size=3)
    for row, result in enumerate(results):
        for name, head in run.heads.items():
            expected = dict(zip(head.labels, probs[name][row].tolist(), strict=True))
            assert result.heads[name].scores == pytest.approx(expected, abs=1e-5)


def test_a_batch_normalised_at_once_equals_the_eval_transform_of_each_image(predictor, images):
    loaded = predictor.load([*images, images[0].parent / "missing.png"])
    assert all(tensor.dtype == torch.uint8 for _, tensor, _ in loaded[:-1])
    assert isinstance(loaded[-1][1], str)  # the error stays per image
    uint8 = torch.stack([tensor for _, tensor, _ in loaded[:-1]])
    batch = predictor.normalize(uint8)
    one_by_one = torch.stack(
        [predictor.transform(decode_image(path, predictor.preprocess)) for path in images]
    )
    assert batch.dtype == torch.float32 and torch.equal(batch, one_by_one)
    # The model call takes the uint8 crops as they are, and normalised floats alike.
    for name, probs in predictor.probabilities(uint8).items():
        np.testing.assert_array_equal(probs, predictor.probabilities(batch)[name])


def test_thresholds_come_from_pictag_json(tiny_run, images, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(tiny_run, run_dir)

    def with_thresholds(value: float) -> Predictor:
        meta = json.loads((run_dir / "pictag.json").read_text())
        meta["decisions"]["tags"] = {"thresholds": [value] * 4}
        (run_dir / "pictag.json").write_text(json.dumps(meta))
        return Predictor.from_run(run_dir)

    everything = with_thresholds(0.0).predict(images[:2])
    assert all(len(r.heads["tags"].labels) == 4 for r in everything)
    nothing = with_thresholds(1.0)
    assert all(r.heads["tags"].labels == [] for r in nothing.predict(images[:2]))
    forced = nothing.predict(images[:2], at_least_one=True)
    for result in forced:
        tags = result.heads["tags"]
        assert tags.labels == [next(iter(tags.scores))]  # the most probable one
    assert forced[0].heads["colour"].labels  # multiclass heads ignore the thresholds


def test_to_dict_is_json_ready(predictor, images, tmp_path):
    missing = tmp_path / "nope.png"
    results = predictor.predict([images[0], missing])
    data = json.loads(json.dumps([r.to_dict() for r in results]))
    assert data[0]["error"] is None
    assert data[0]["heads"]["colour"]["kind"] == "multiclass"
    assert data[0]["heads"]["tags"]["scores"] == results[0].heads["tags"].scores
    assert data[1] == {"source": str(missing), "heads": {}, "error": results[1].error}
