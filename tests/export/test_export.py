"""ONNX and TorchScript export: parity with PyTorch for every task kind, the metadata read back
with plain ``onnx``, and a file that misses the tolerance is not kept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from pictag.data.transforms import decode_image, eval_transform
from pictag.export import ExportError, ParityError, export_run, formats, run_export
from pictag.export.formats import TORCHSCRIPT_EXTRA
from pictag.models.onnx_cache import CACHE_DIR
from pictag.run import load_run
from pictag.version import __version__


def _eager_probs(run_dir: Path, images: torch.Tensor) -> dict[str, np.ndarray]:
    run = load_run(run_dir)
    with torch.no_grad():
        logits = run.model.eval()(images)
    activations = {"multiclass": lambda x: x.softmax(-1), "multilabel": torch.sigmoid}
    return {n: activations[h.kind](logits[n]).numpy() for n, h in run.heads.items()}


def _real_batch(run_dir: Path) -> torch.Tensor:
    pre = load_run(run_dir).preprocess
    paths = sorted((run_dir.parent / "images").iterdir())[:5]
    return torch.stack([eval_transform(pre)(decode_image(p, pre)) for p in paths])


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "multioutput"])
def test_onnx_matches_pytorch_for_every_task_kind(runs, exported, kind):
    run_dir, report = runs[kind], exported[kind].onnx
    heads = list(load_run(run_dir).heads)
    assert report.path == run_dir / "model.onnx" and report.path.is_file()
    assert report.passed and report.exporter == "torchscript"  # the fast one, tried first
    assert set(report.max_abs_diff) == {"random", "real"}
    assert report.images == {"random": 4, "real": 12}  # 18 images: 6 val + 6 test
    for by_head in report.max_abs_diff.values():
        assert list(by_head) == heads and max(by_head.values()) < 1e-5

    session = onnxruntime.InferenceSession(str(report.path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == heads  # one named output per head
    batch = _real_batch(run_dir)  # 5 images: a batch size the export never saw
    outputs = dict(zip(heads, session.run(None, {"images": batch.numpy()}), strict=True))
    expected = _eager_probs(run_dir, batch)
    for name in heads:
        assert outputs[name].shape == expected[name].shape
        np.testing.assert_allclose(outputs[name], expected[name], atol=1e-5)
    if "colour" in outputs:  # softmax, not logits
        np.testing.assert_allclose(outputs["colour"].sum(1), 1.0, atol=1e-5)


def test_graph_has_a_dynamic_batch_axis(exported):
    model = onnx.load(str(exported["multioutput"].onnx.path))
    dims = [model.graph.input[0], *model.graph.output]
    for value in dims:
        batch = value.type.tensor_type.shape.dim[0]
        assert batch.dim_param and not batch.dim_value, value.name
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim[1:]] == [3, 16, 16]


def test_metadata_read_back_with_plain_onnx(runs, exported):
    model = onnx.load(str(exported["multioutput"].onnx.path))
    props = {prop.key: prop.value for prop in model.metadata_props}
    meta = json.loads(props["pictag"])
    run = load_run(runs["multioutput"])

    assert meta["format"] == "pictag-onnx/1" and meta["pictag_version"] == __version__
    assert meta["checkpoint_id"] == run.meta["checkpoint_id"]
    assert meta["input"] == {
        "name": "images",
        "layout": "NCHW",
        "dtype": "float32",
        "shape": [-1, 3, 16, 16],
    }
    assert meta["preprocess"] == {
        "input_size": [3, 16, 16],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "interpolation": "bicubic",
        "crop_pct": 0.875,
        "resize_shorter_to": 18,  # round(16 / 0.875)
    }
    colour, tags = meta["heads"]
    assert colour == {
        "name": "colour",
        "kind": "multiclass",
        "output": "colour",
        "activation": "softmax",
        "decision": "argmax",
        "labels": ["red", "green", "blue"],
    }
    assert tags["kind"] == "multilabel" and tags["activation"] == "sigmoid"
    assert tags["labels"] == ["cool", "leafy", "natural", "warm"]
    assert tags["thresholds"] == [0.4, 0.5, 0.6, 0.5] == meta["thresholds"]["tags"]
    # flat keys for tools that list metadata_props
    assert props["heads"] == "colour,tags" and props["pictag_version"] == __version__
    assert props["input_size"] == "3,16,16" and props["interpolation"] == "bicubic"
    assert props["crop_pct"] == "0.875" and props["mean"] == "0.5,0.5,0.5"
    assert json.loads(props["labels.tags"]) == ["cool", "leafy", "natural", "warm"]


def test_missing_thresholds_are_filled_with_one_half(exported):
    model = onnx.load(str(exported["multilabel"].onnx.path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["pictag"])
    assert [h["name"] for h in meta["heads"]] == ["tags"]
    assert meta["thresholds"] == {"tags": [0.4, 0.5, 0.6, 0.5]}  # stored ones kept

    from pictag.data.schema import Head
    from pictag.data.transforms import Preprocess
    from pictag.export.metadata import build_metadata

    pre = Preprocess((3, 8, 8), (0.5,) * 3, (0.5,) * 3)
    filled = build_metadata({"t": Head("t", "multilabel", ("a", "b"))}, pre, {}, None)
    assert filled["thresholds"] == {"t": [0.5, 0.5]}


def test_torchscript_matches_and_carries_the_metadata(runs, copy_run, caplog):
    run_dir = copy_run(runs["multioutput"])
    (run_dir / "splits.csv").unlink()  # no real images: random inputs only, and said so
    path = run_dir / "model.pt"
    with caplog.at_level("INFO", logger="pictag.export.formats"):
        result = export_run(run_dir, torchscript_path=path, onnx=False)
    assert result.onnx is None
    report = result.torchscript
    assert report.passed and set(report.max_abs_diff) == {"random"}
    assert "real images: none" in report.summary()
    assert "deprecates TorchScript" in caplog.text  # torch.jit's warnings turned into one note

    extra = {TORCHSCRIPT_EXTRA: ""}
    with pytest.warns(FutureWarning, match="deprecated"):
        loaded = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra[TORCHSCRIPT_EXTRA])
    assert [h["name"] for h in meta["heads"]] == ["colour", "tags"]
    batch = _real_batch(run_dir)
    with torch.no_grad():
        colour, tags = loaded(batch)
    expected = _eager_probs(run_dir, batch)
    np.testing.assert_allclose(colour.numpy(), expected["colour"], atol=1e-6)
    np.testing.assert_allclose(tags.numpy(), expected["tags"], atol=1e-6)


def _corrupting(load):
    """A loader whose runner shifts every probability by 1e-3, as a mistranslated op would."""

    def loader(*args):
        run = load(*args)
        return lambda images: {k: v + 1e-3 for k, v in run(images).items()}

    return loader


def test_file_over_the_tolerance_is_not_kept(runs, copy_run, monkeypatch):
    run_dir = copy_run(runs["multiclass"])
    path = run_dir / "model.pt"
    path.write_bytes(b"an earlier export")
    monkeypatch.setattr(
        run_export, "torchscript_file_runner", _corrupting(run_export.torchscript_file_runner)
    )
    with pytest.raises(ParityError, match=r"parity FAILED \(tolerance 0.0001\)") as error:
        export_run(run_dir, torchscript_path=path, onnx=False)
    assert "colour 1.00e-03" in str(error.value)  # the max difference, per head
    assert not path.exists()  # neither the bad file nor the earlier one
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".")) == []  # no temp

    result = export_run(run_dir, torchscript_path=path, onnx=False, tolerance=1e-2)
    assert result.torchscript.passed and path.is_file()  # within a looser tolerance: kept


def test_a_model_no_exporter_can_write_is_reported(runs, copy_run, monkeypatch):
    run_dir = copy_run(runs["multiclass"])
    (run_dir / "model.onnx").write_bytes(b"an earlier export")

    def refuse(*args, **kwargs):
        raise NotImplementedError("no ONNX op for aten::frobnicate")

    monkeypatch.setattr(formats, "export_onnx", refuse)
    with pytest.raises(ExportError, match=r"torchscript: NotImplementedError: no ONNX op") as e:
        export_run(run_dir)
    assert "torch.export: NotImplementedError" in str(e.value)  # the fallback was tried too
    assert not (run_dir / "model.onnx").exists()


def test_bad_arguments_are_refused(runs, tmp_path):
    with pytest.raises(ValueError, match="tolerance"):
        export_run(runs["multiclass"], tolerance=-1)
    with pytest.raises(ValueError, match="nothing to export"):
        export_run(runs["multiclass"], onnx=False)
    with pytest.raises(FileNotFoundError, match="not a pictag run folder"):
        export_run(tmp_path)


def test_the_parity_check_keeps_no_optimised_copy_of_the_file_it_checks(runs, copy_run, tmp_path):
    # The check opens the export under a temporary name: an optimised copy of it
    # (pictag.models.onnx_cache) would never be opened again, yet take the model's size.
    run_dir = copy_run(runs["multiclass"])
    elsewhere = tmp_path / "elsewhere" / "mine.onnx"
    elsewhere.parent.mkdir()
    export_run(run_dir)
    export_run(run_dir, onnx_path=elsewhere)
    cached = run_dir / CACHE_DIR
    assert not cached.exists() or all(p.name.startswith("model-") for p in cached.iterdir())
    assert not (elsewhere.parent / CACHE_DIR).exists()
