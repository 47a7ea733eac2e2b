"""A plain, hand-written reference of the steps ``pictag train`` takes on a CPU, for
``time_to_accuracy.py`` to compare against: decode every image once, EfficientNet-Lite0
features in ONNX Runtime, scikit-learn L-BFGS logistic heads (C=1) on the training images,
then fine-tuning with BatchNorm frozen (random 224 crops of a 256 px image + flip, AdamW 1e-4
on the whole net, one-cycle), scored on the test images after the probe and after each epoch.

Only the image list, the targets and the split come from pictag (so both see the same
images); everything that trains or scores is written here with torch, timm, onnxruntime and
scikit-learn alone. fp32 throughout, as on a CPU without native bf16.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import torch
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score
from torch import nn

from pictag.models.backbone import create_backbone

SIZE, BASE = 224, 256
MEAN = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)  # tf_efficientnet_lite0's own
STD = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)


def decode(paths: list[Path]) -> torch.Tensor:
    """uint8 ``[N, 3, BASE, BASE]``: shorter side to BASE, centre crop (decoded once)."""
    out = torch.empty(len(paths), 3, BASE, BASE, dtype=torch.uint8)
    for i, path in enumerate(paths):
        with Image.open(path) as image:
            image = image.convert("RGB")
            scale = BASE / min(image.size)
            w, h = max(BASE, round(image.width * scale)), max(BASE, round(image.height * scale))
            image = image.resize((w, h), Image.Resampling.BILINEAR)
            left, top = (w - BASE) // 2, (h - BASE) // 2
            image = image.crop((left, top, left + BASE, top + BASE))
        out[i] = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
    return out


def normalise(images: torch.Tensor) -> torch.Tensor:
    return (images.float() / 255 - MEAN) / STD


def centre(images: torch.Tensor) -> torch.Tensor:
    off = (BASE - SIZE) // 2
    return images[:, :, off : off + SIZE, off : off + SIZE]


def onnx_features(backbone: nn.Module, images: torch.Tensor, batch: int = 64) -> np.ndarray:
    """Pooled features of the centre crops, by ONNX Runtime."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "backbone.onnx"
        example = torch.zeros(1, 3, SIZE, SIZE)
        torch.onnx.export(
            backbone.eval(), (example,), str(path), input_names=["x"], output_names=["f"],
            dynamic_axes={"x": {0: "n"}, "f": {0: "n"}}, dynamo=False,
        )  # fmt: skip
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        parts = [
            session.run(None, {"x": normalise(centre(images[i : i + batch])).numpy()})[0]
            for i in range(0, len(images), batch)
        ]
    return np.concatenate(parts)


def fit_probe(features: np.ndarray, target: np.ndarray, multilabel: bool) -> list:
    """One scikit-learn logistic regression (L-BFGS, C=1) per head, or per tag."""
    if not multilabel:
        return [LogisticRegression(C=1.0, max_iter=1000).fit(features, target)]
    return [LogisticRegression(C=1.0, max_iter=1000).fit(features, t) for t in target.T]


def probe_linear(models: list, width: int, multilabel: bool) -> nn.Linear:
    """The fitted probe as a torch linear layer (the fine-tune's initial head)."""
    weight = np.concatenate([m.coef_ for m in models])
    bias = np.concatenate([m.intercept_ for m in models])
    if not multilabel and len(bias) == 1:  # scikit-learn's binary: one logit for class 1
        weight, bias = np.concatenate([-weight / 2, weight / 2]), np.array([-bias[0], bias[0]]) / 2
    layer = nn.Linear(width, len(bias))
    layer.weight.data = torch.tensor(weight, dtype=torch.float32)
    layer.bias.data = torch.tensor(bias, dtype=torch.float32)
    return layer


def score(logits: np.ndarray, target: np.ndarray, multilabel: bool) -> float:
    """mAP (macro over tags) for a tag head, accuracy for a class head."""
    if multilabel:
        return float(average_precision_score(target, logits, average="macro"))
    return float((logits.argmax(1) == target).mean())


class Net(nn.Module):
    def __init__(self, backbone: nn.Module, heads: dict[str, nn.Linear]) -> None:
        super().__init__()
        self.backbone, self.heads = backbone, nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(x)
        return {name: head(features) for name, head in self.heads.items()}


def run_reference(
    train: tuple[list[Path], dict[str, np.ndarray]],
    test: tuple[list[Path], dict[str, np.ndarray]],
    multilabel: dict[str, bool],
    epochs: int,
    batch: int = 32,
    seed: int = 0,
) -> dict[str, Any]:
    """The reference's test scores and wall times after the probe and after each epoch."""
    torch.manual_seed(seed)
    started = time.perf_counter()
    backbone, _ = create_backbone("tf_efficientnet_lite0", pretrained="offline")
    train_images, test_images = decode(train[0]), decode(test[0])
    train_features = onnx_features(backbone, train_images)
    test_features = onnx_features(backbone, test_images)
    heads, scores = {}, {}
    for name, is_multilabel in multilabel.items():
        known = _known(train[1][name], is_multilabel)
        models = fit_probe(train_features[known], train[1][name][known], is_multilabel)
        heads[name] = probe_linear(models, train_features.shape[1], is_multilabel)
        logits = heads[name](torch.from_numpy(test_features)).detach().numpy()
        scores[name] = _test_score(logits, test[1][name], is_multilabel)
    steps = [{"step": "probe", "seconds": time.perf_counter() - started, "scores": scores}]
    net = Net(backbone, heads).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4)
    per_epoch = len(train_images) // batch
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-4, total_steps=epochs * per_epoch)
    for epoch in range(epochs):
        _train_epoch(net, optimizer, schedule, train_images, train[1], multilabel, batch)
        scores = _evaluate(net, test_images, test[1], multilabel)
        seconds = time.perf_counter() - started
        steps.append({"step": f"epoch {epoch + 1}", "seconds": seconds, "scores": scores})
    return {"steps": steps}


def _known(target: np.ndarray, multilabel: bool) -> np.ndarray:
    return (target >= 0).all(1) if multilabel else target >= 0


def _test_score(logits: np.ndarray, target: np.ndarray, multilabel: bool) -> float:
    known = _known(target, multilabel)
    return score(logits[known], target[known], multilabel)


def _loss(logits: torch.Tensor, target: torch.Tensor, multilabel: bool) -> torch.Tensor:
    if multilabel:
        mask = (target >= 0).float()
        raw = nn.functional.binary_cross_entropy_with_logits(
            logits, target.clamp(min=0).float(), reduction="none"
        )
        return (raw * mask).sum() / mask.sum().clamp(min=1)
    return nn.functional.cross_entropy(logits, target.long(), ignore_index=-100)


def _train_epoch(net, optimizer, schedule, images, targets, multilabel, batch) -> None:
    net.train()
    for module in net.modules():  # BatchNorm frozen: keep the pretrained statistics
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    order = torch.randperm(len(images))
    for start in range(0, len(order) - batch + 1, batch):
        rows = order[start : start + batch]
        x = _augment(images[rows]).contiguous(memory_format=torch.channels_last)
        outputs = net(x)
        loss = sum(
            _loss(outputs[n], torch.from_numpy(targets[n][rows.numpy()]), m)
            for n, m in multilabel.items()
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()


def _augment(images: torch.Tensor) -> torch.Tensor:
    """A random 224 crop of each 256 px image, flipped half the time."""
    out = torch.empty(len(images), 3, SIZE, SIZE)
    for i, image in enumerate(images):
        top, left = np.random.randint(0, BASE - SIZE + 1, size=2)
        crop = image[:, top : top + SIZE, left : left + SIZE]
        out[i] = normalise(crop.flip(-1) if np.random.rand() < 0.5 else crop)[0]
    return out


@torch.no_grad()
def _evaluate(net, images, targets, multilabel, batch: int = 64) -> dict[str, float]:
    net.eval()
    outputs: dict[str, list[np.ndarray]] = {name: [] for name in multilabel}
    for start in range(0, len(images), batch):
        x = normalise(centre(images[start : start + batch])).contiguous(
            memory_format=torch.channels_last
        )
        for name, logits in net(x).items():
            outputs[name].append(logits.numpy())
    return {
        name: _test_score(np.concatenate(outputs[name]), targets[name], m)
        for name, m in multilabel.items()
    }
