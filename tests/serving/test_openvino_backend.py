"""The server runs whatever backend its Predictor runs: OpenVINO included, with the same answers
as ONNX Runtime and the backend named in ``GET /model``."""

from __future__ import annotations

import shutil

import pytest
from fastapi.testclient import TestClient

from pictag.evaluation.predictor import Predictor
from pictag.export import export_run
from pictag.serving.app import app_from_run, create_app
from pictag.serving.schemas import ModelInfo, PredictResponse

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def exported_run(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("served")
    shutil.copytree(tiny_run.parent, root, dirs_exist_ok=True)
    export_run(root / "run")
    return root / "run"


def test_server_predicts_with_openvino(exported_run):
    predictor = Predictor.from_run(exported_run, "cpu", backend="openvino")
    reference = Predictor.from_run(exported_run, "cpu", backend="onnxruntime")
    client = TestClient(create_app(predictor))
    assert ModelInfo.model_validate(client.get("/model").json()).backend == "openvino"
    images = [path.read_bytes() for path in sorted((exported_run.parent / "images").iterdir())[:3]]
    form = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(images)]
    response = client.post("/predict", files=form)
    assert response.status_code == 200, response.text
    body = PredictResponse.model_validate(response.json()).model_dump()
    for got, want in zip(body["predictions"], reference.predict(images), strict=True):
        for name, head in want.heads.items():
            assert got["heads"][name]["labels"] == head.labels
            assert got["heads"][name]["scores"] == pytest.approx(head.scores, abs=1e-4)


def test_served_auto_backend_is_the_predictors(exported_run):
    client = TestClient(app_from_run(exported_run, device="cpu"))
    served = ModelInfo.model_validate(client.get("/model").json()).backend
    assert served in ("onnxruntime", "openvino")
    assert served == Predictor.from_run(exported_run, "cpu").backend  # the same choice
