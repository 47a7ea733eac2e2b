"""`pictag train` with a segmentation head from every kind of mask source: class-index PNGs,
palette PNGs with void borders, RGB colour masks, trimaps, instance masks, COCO polygons and
masks attached to a CSV of tags; bad masks under both data policies; and one run through
`pictag evaluate` and `pictag predict`."""

from __future__ import annotations

import base64
import csv
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.cli import main
from pictag.config import load_config
from pictag.data.sources import SourceResult, read_samples
from pictag.heads.labels import Head
from pictag.heads.masks import IGNORE, MASK_SIDE, resize_nearest

FAST = [
    "model.backbone=test_efficientnet",
    "model.pretrained=none",
    "model.image_size=64",
    "train.epochs=1",
    "train.batch_size=8",
    "train.budget=off",
]
WIDTH, HEIGHT = 48, 40
N_IMAGES = 24
GREY, RED, BLUE = (128, 128, 128), (230, 30, 30), (30, 30, 230)
LABELS = "heads.seg.labels=[background, red, blue]"
# One colour per class; the palette of a VOC-style mask puts them at indices 0, 1, 2 and 255.
PALETTE = [0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (3 * 252) + [224, 224, 192]


def _scenes(n: int = N_IMAGES, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``(pixels, classes, instances)`` of ``n`` images: a red rectangle in the left half
    and/or a blue one in the right half (classes 1 and 2) on grey (class 0), at least 2 px from
    the edges and from each other, so void borders and trimap bands fit around them.
    ``instances`` numbers the objects 1..k (0 background), as PennFudan's masks do."""
    rng = np.random.default_rng(seed)
    scenes = []
    for _ in range(n):
        pixels = np.empty((HEIGHT, WIDTH, 3), np.uint8)
        pixels[:] = GREY
        classes = np.zeros((HEIGHT, WIDTH), np.uint8)
        instances = np.zeros((HEIGHT, WIDTH), np.uint8)
        present = [rng.random() < 0.8, rng.random() < 0.8]
        present[int(rng.integers(2))] |= not any(present)
        ids = iter(rng.permutation(sum(present)) + 1)
        for cls, colour, left, shown in ((1, RED, 0, present[0]), (2, BLUE, 24, present[1])):
            if not shown:
                continue
            w, h = int(rng.integers(8, 18)), int(rng.integers(8, 20))
            x, y = left + int(rng.integers(2, 23 - w)), int(rng.integers(2, HEIGHT - 1 - h))
            pixels[y : y + h, x : x + w] = colour
            classes[y : y + h, x : x + w] = cls
            instances[y : y + h, x : x + w] = next(ids)
        scenes.append((pixels, classes, instances))
    return scenes


def _edges(classes: np.ndarray) -> np.ndarray:
    """Pixels beside a pixel of another class (4-neighbourhood): VOC's void outline."""
    edge = np.zeros(classes.shape, bool)
    edge[1:] |= classes[1:] != classes[:-1]
    edge[:-1] |= classes[:-1] != classes[1:]
    edge[:, 1:] |= classes[:, 1:] != classes[:, :-1]
    edge[:, :-1] |= classes[:, :-1] != classes[:, 1:]
    return edge


def _write(
    root: Path,
    encode: Callable[[np.ndarray, np.ndarray], Image.Image] | None = None,
    name: str = "{stem}.png",
    n: int = N_IMAGES,
) -> tuple[Path, Path]:
    """``root/images`` of ``n`` scenes and ``root/masks`` of their masks, ``encode(classes,
    instances)`` each (default: class indices in mode ``L``). Returns the two folders."""
    encode = encode or (lambda classes, _: Image.fromarray(classes, "L"))
    images, masks = root / "images", root / "masks"
    images.mkdir(parents=True)
    masks.mkdir()
    for i, (pixels, classes, instances) in enumerate(_scenes(n)):
        Image.fromarray(pixels).save(images / f"{i:03d}.png")
        encode(classes, instances).save(masks / name.format(stem=f"{i:03d}"))
    return images, masks


def _settings(images: Path, masks: Path | None, *extra: str) -> list[str]:
    """``--set`` items of a segmentation head ``seg`` reading ``masks`` for ``images``."""
    given = [f"data.images=[{images}]", "heads.seg.kind=segmentation"]
    return [*given, *([f"heads.seg.masks={masks}"] if masks else []), *extra]


def _train(run: Path, settings: list[str]) -> int:
    args = ["train", "--out", str(run)]
    for item in [*settings, *FAST]:
        args += ["--set", item]
    return main(args)


def _check_run(run: Path, heads: dict[str, tuple[str, list[str]]]) -> None:
    """The run stored each head's kind and labels, and validated every segmentation head."""
    meta = json.loads((run / "pictag.json").read_text())
    assert {h["name"]: (h["kind"], h["labels"]) for h in meta["heads"]} == heads
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    for name, (kind, _) in heads.items():
        if kind == "segmentation":
            assert 0.0 <= last[f"val/{name}/miou"] <= 1.0


def _source(settings: list[str]) -> SourceResult:
    """The samples and problems the run's data source reads, as `pictag train` read them."""
    config = load_config(overrides=settings)
    return read_samples(config.data, config.heads)


def _targets(run: Path, settings: list[str], head: str = "seg") -> dict[str, np.ndarray]:
    """Image file name -> the training target the run's head makes of its mask."""
    meta = json.loads((run / "pictag.json").read_text())
    stored = Head.from_dict(next(h for h in meta["heads"] if h["name"] == head))
    return {s.path.name: stored.target(s.labels[head]) for s in _source(settings).samples}


def _trained_images(run: Path) -> set[str]:
    lines = (run / "splits.csv").read_text().splitlines()[1:]
    return {Path(line.split(",")[0]).name for line in lines}


def _big(mask: np.ndarray) -> np.ndarray:
    """A class map at the target's size, resized as targets are (nearest neighbour)."""
    return resize_nearest(mask, (MASK_SIDE, MASK_SIDE))


@pytest.fixture(scope="module")
def named_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Class-index masks, their classes named by heads.seg.labels: the images folder and run."""
    root = tmp_path_factory.mktemp("named")
    images, masks = _write(root)
    run = root / "run"
    assert _train(run, _settings(images, masks, LABELS)) == 0
    return images, run


def test_class_index_masks_are_named_by_their_values(tmp_path):
    images, masks = _write(tmp_path)
    run = tmp_path / "run"
    assert _train(run, _settings(images, masks)) == 0
    _check_run(run, {"seg": ("segmentation", ["0", "1", "2"])})


def test_class_index_masks_take_their_names_from_heads_labels(named_run):
    images, run = named_run
    _check_run(run, {"seg": ("segmentation", ["background", "red", "blue"])})
    settings = _settings(images, images.parent / "masks", LABELS)
    targets = _targets(run, settings)
    for i, (_, classes, _) in enumerate(_scenes()):
        np.testing.assert_array_equal(targets[f"{i:03d}.png"], _big(classes))


def test_palette_masks_ignore_their_void_borders(tmp_path):
    def palette(classes: np.ndarray, _: np.ndarray) -> Image.Image:
        image = Image.fromarray(np.where(_edges(classes), 255, classes).astype(np.uint8), "P")
        image.putpalette(PALETTE)
        return image

    images, masks = _write(tmp_path, palette)
    assert Image.open(masks / "000.png").mode == "P"
    run = tmp_path / "run"
    settings = _settings(images, masks, LABELS)
    assert _train(run, settings) == 0
    _check_run(run, {"seg": ("segmentation", ["background", "red", "blue"])})
    targets = _targets(run, settings)
    for i, (_, classes, _) in enumerate(_scenes()):
        void = _big(_edges(classes).astype(np.uint8)).astype(bool)
        target = targets[f"{i:03d}.png"]
        assert void.any()
        assert np.all(target[void] == IGNORE)  # the void outline counts for nothing
        np.testing.assert_array_equal(target[~void], _big(classes)[~void])


def test_rgb_colour_masks_are_read_through_mask_colors(tmp_path):
    colours = np.array([(0, 0, 0), (255, 0, 0), (0, 0, 255)], np.uint8)
    images, masks = _write(tmp_path, lambda classes, _: Image.fromarray(colours[classes]))
    assert Image.open(masks / "000.png").mode == "RGB"
    run = tmp_path / "run"
    mapping = 'heads.seg.mask_colors={"#ff0000": red, "#0000ff": blue, "#000000": background}'
    settings = _settings(images, masks, mapping)
    assert _train(run, settings) == 0
    # Classes named by a mapping are sorted, background first.
    _check_run(run, {"seg": ("segmentation", ["background", "blue", "red"])})
    targets = _targets(run, settings)
    order = np.array([0, 2, 1], np.uint8)  # mask class 1 (red) is label 2, 2 (blue) label 1
    for i, (_, classes, _) in enumerate(_scenes()):
        np.testing.assert_array_equal(targets[f"{i:03d}.png"], _big(order[classes]))


def test_trimap_border_bands_are_ignored(tmp_path):
    def trimap(classes: np.ndarray, _: np.ndarray) -> Image.Image:
        # Oxford-IIIT Pet: 1 pet, 2 background, 3 the unclassified band around the pet.
        values = np.where(classes > 0, 1, 2)
        return Image.fromarray(np.where(_edges(classes), 3, values).astype(np.uint8), "L")

    images, masks = _write(tmp_path, trimap, name="{stem}_trimap.png")
    run = tmp_path / "run"
    settings = _settings(images, masks, "heads.seg.mask_values={1: pet, 2: background, 3: ignore}")
    assert _train(run, settings) == 0
    _check_run(run, {"seg": ("segmentation", ["background", "pet"])})
    targets = _targets(run, settings)
    for i, (_, classes, _) in enumerate(_scenes()):
        band = _big(_edges(classes).astype(np.uint8)).astype(bool)
        target = targets[f"{i:03d}.png"]
        assert band.any() and np.all(target[band] == IGNORE)
        np.testing.assert_array_equal(target[~band], _big((classes > 0).astype(np.uint8))[~band])


def test_instance_masks_map_every_object_id_to_one_class(tmp_path):
    images, masks = _write(
        tmp_path, lambda _, instances: Image.fromarray(instances, "L"), name="{stem}_mask.png"
    )
    assert {p.name for p in masks.iterdir()} >= {"000_mask.png", "023_mask.png"}
    assert max(int(np.asarray(Image.open(p)).max()) for p in masks.iterdir()) == 2
    run = tmp_path / "run"
    settings = _settings(images, masks, "heads.seg.mask_values={0: background, 1-255: thing}")
    assert _train(run, settings) == 0
    _check_run(run, {"seg": ("segmentation", ["background", "thing"])})
    targets = _targets(run, settings)
    for i, (_, _, instances) in enumerate(_scenes()):
        np.testing.assert_array_equal(
            targets[f"{i:03d}.png"], _big((instances > 0).astype(np.uint8))
        )


def _bounds(classes: np.ndarray, cls: int) -> tuple[int, int, int, int] | None:
    """``(x, y, w, h)`` of the rectangle of class ``cls``, None when the image has none."""
    rows, cols = np.nonzero(classes == cls)
    if not len(rows):
        return None
    return (
        int(cols.min()),
        int(rows.min()),
        int(cols.max() + 1 - cols.min()),
        int(rows.max() + 1 - rows.min()),
    )


def test_one_coco_file_feeds_a_segmentation_head_and_a_tags_head(tmp_path):
    images, _ = _write(tmp_path)
    coco: dict[str, list] = {"images": [], "annotations": []}
    coco["categories"] = [{"id": 1, "name": "red"}, {"id": 2, "name": "blue"}]
    for i, (_, classes, _) in enumerate(_scenes()):
        coco["images"].append(
            {"id": i + 1, "file_name": f"{i:03d}.png", "width": WIDTH, "height": HEIGHT}
        )
        for cls in (1, 2):
            found = _bounds(classes, cls)
            if found is None:
                continue
            x, y, w, h = found
            polygon = [x, y, x + w, y, x + w, y + h, x, y + h]
            coco["annotations"].append(
                {"id": len(coco["annotations"]) + 1, "image_id": i + 1, "category_id": cls,
                 "iscrowd": 0, "bbox": [x, y, w, h], "area": w * h, "segmentation": [polygon]}
            )  # fmt: skip
    (tmp_path / "instances.json").write_text(json.dumps(coco))
    run = tmp_path / "run"
    settings = [
        f"data.images=[{images}]",
        f"data.labels={tmp_path / 'instances.json'}",
        "heads.mask.kind=segmentation",
        "heads.tags.kind=multilabel",
        # `--set heads.NAME.KEY` alone turns data.all_heads on, which adds COCO's own
        # `objects` head beside the two named here.
        "data.all_heads=false",
    ]
    assert _train(run, settings) == 0
    _check_run(
        run,
        {
            "mask": ("segmentation", ["background", "blue", "red"]),
            "tags": ("multilabel", ["blue", "red"]),
        },
    )
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert "val/tags/mAP" in last
    targets = _targets(run, settings, "mask")
    order = np.array([0, 2, 1], np.uint8)
    for i, (_, classes, _) in enumerate(_scenes()):
        # Polygons along pixel edges cover exactly the rectangles' pixels.
        np.testing.assert_array_equal(targets[f"{i:03d}.png"], _big(order[classes]))


def test_masks_attach_to_a_csv_of_tags_and_may_be_missing(tmp_path):
    images, masks = _write(tmp_path)
    (masks / "005.png").unlink()
    rows = ["image,tags"]
    for i, (_, classes, _) in enumerate(_scenes()):
        tags = [name for cls, name in ((1, "red"), (2, "blue")) if (classes == cls).any()]
        rows.append(f"{i:03d}.png,{' '.join(tags)}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    run = tmp_path / "run"
    settings = _settings(
        images,
        masks,
        LABELS,
        f"data.labels={tmp_path / 'labels.csv'}",
        "heads.tags.kind=multilabel",
    )
    assert _train(run, settings) == 0
    _check_run(
        run,
        {
            "seg": ("segmentation", ["background", "red", "blue"]),
            "tags": ("multilabel", ["blue", "red"]),
        },
    )
    assert "val/tags/mAP" in json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    # 005.png has tags but no mask: a warning names it, and it trains with its seg target
    # missing (all ignored) rather than being dropped.
    warned = [p for p in _source(settings).problems if p.kind == "missing_mask"]
    assert [p.severity for p in warned] == ["warning"] and "005.png" in warned[0].message
    assert "005.png" in _trained_images(run)
    targets = _targets(run, settings)
    assert np.all(targets["005.png"] == IGNORE)
    assert np.all(targets["004.png"] != IGNORE)


def test_a_masks_only_image_without_a_mask_is_left_out_with_a_warning(tmp_path):
    """With the segmentation head as the only head, an image without a mask teaches nothing:
    it is left out (one warning naming it), and the run trains on the others."""
    images, masks = _write(tmp_path, n=12)
    (masks / "005.png").unlink()
    run = tmp_path / "run"
    settings = _settings(images, masks, LABELS)
    assert _train(run, settings) == 0
    warned = [p for p in _source(settings).problems if p.kind == "no_mask"]
    assert [p.severity for p in warned] == ["warning"]
    assert "no mask for any head and are left out: 005.png" in warned[0].message
    assert "005.png" not in _trained_images(run) and "006.png" in _trained_images(run)


def _bad_masks(masks: Path) -> None:
    """Break two masks: one the wrong size, one with a value no class covers."""
    Image.fromarray(np.zeros((HEIGHT, WIDTH + 2), np.uint8), "L").save(masks / "003.png")
    values = np.asarray(Image.open(masks / "007.png")).copy()
    values[0, 0] = 7
    Image.fromarray(values, "L").save(masks / "007.png")


def test_bad_masks_stop_a_strict_run_before_training(tmp_path, capsys):
    images, masks = _write(tmp_path)
    _bad_masks(masks)
    run = tmp_path / "run"
    assert _train(run, _settings(images, masks, LABELS)) == 1
    err = capsys.readouterr().err
    assert f"{masks / '003.png'}: mask is 50x40, image 48x40" in err
    assert f"{masks / '007.png'}: values no class covers: 7" in err
    assert not (run / "model.safetensors").exists()


@pytest.mark.parametrize("policy", ["trivialaugment", "randaugment"])
def test_an_augmentation_policy_that_cannot_move_masks_stops_before_training(
    tmp_path, capsys, policy
):
    """torchvision's policies refuse masks: before the fix, the run failed at the first
    fine-tune batch, after the probe had taken its share of the budget."""
    images, masks = _write(tmp_path, n=12)
    run = tmp_path / "run"
    assert _train(run, _settings(images, masks, LABELS, f"train.augment={policy}")) != 0
    err = capsys.readouterr().err
    assert f"train.augment: {policy} cannot move the boxes or masks of head(s) seg" in err
    assert not (run / "model.safetensors").exists()


def test_skip_policy_trains_without_the_images_of_bad_masks(tmp_path):
    images, masks = _write(tmp_path)
    _bad_masks(masks)
    run = tmp_path / "run"
    assert _train(run, _settings(images, masks, LABELS, "data.policy=skip")) == 0
    _check_run(run, {"seg": ("segmentation", ["background", "red", "blue"])})
    trained = _trained_images(run)
    assert len(trained) == N_IMAGES - 2
    assert not {"003.png", "007.png"} & trained
    # skipped.csv names each dropped mask and why.
    with (run / "skipped.csv").open(newline="") as file:
        skipped = {(row["where"], row["kind"]) for row in csv.DictReader(file)}
    assert skipped == {
        (str(masks / "003.png"), "size_mismatch"),
        (str(masks / "007.png"), "unknown_value"),
    }


def test_evaluate_reports_each_class(named_run, capsys):
    _, run = named_run
    assert main(["evaluate", str(run)]) == 0
    assert "blue" in capsys.readouterr().out
    section = json.loads((run / "report.json").read_text())["heads"]["seg"]
    assert section["kind"] == "segmentation"
    assert [row["label"] for row in section["per_label"]] == ["background", "red", "blue"]
    assert all(0.0 <= row["iou"] <= 1.0 for row in section["per_label"])
    assert 0.0 <= section["metrics"]["miou"] <= 1.0
    assert "<h3>seg: pixel metrics</h3>" in (run / "report.html").read_text()


def test_predict_json_gives_a_mask_at_the_images_own_size(named_run, capsys):
    images, run = named_run
    assert main(["predict", str(run), str(images / "000.png"), "--format", "json"]) == 0
    head = json.loads(capsys.readouterr().out)[0]["heads"]["seg"]
    assert head["kind"] == "segmentation"
    mask = Image.open(io.BytesIO(base64.b64decode(head["mask"]["png"])))
    assert mask.format == "PNG" and mask.size == (WIDTH, HEIGHT)
    values = np.asarray(mask)
    assert values.max() < 3
    assert head["mask"]["classes"] == ["background", "red", "blue"]
    # The shares are of the decided mask's pixels, so they sum to one and match the PNG.
    assert sum(head["scores"].values()) == pytest.approx(1.0, abs=1e-4)
    for index, label in enumerate(head["mask"]["classes"]):
        share = float((values == index).mean())
        assert head["scores"].get(label, 0.0) == pytest.approx(share, abs=1e-4)
    assert set(head["labels"]) <= set(head["scores"])


def test_predict_show_writes_a_picture(named_run, tmp_path):
    images, run = named_run
    shown = tmp_path / "shown"
    assert main(["predict", str(run), str(images / "000.png"), "--show", str(shown)]) == 0
    pictures = list(shown.glob("*.png"))
    assert len(pictures) == 1
    with Image.open(pictures[0]) as picture:
        assert picture.size[0] > 0 and picture.size[1] > 0
