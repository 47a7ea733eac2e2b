"""Tests for pictag.data.builtin: files, labels, determinism and reuse of the demo datasets."""

import csv
import functools
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.builtin import BOX_COLUMNS, TASKS, BuiltinDataset, make_builtin
from pictag.data.builtin_describe import describe
from pictag.data.builtin_masks import MASK_COLUMNS, MASK_VALUES, STROKE_MIN
from pictag.data.sources import read_samples
from pictag.heads.masks import BACKGROUND, MaskLabel

EXPECTED_HEADS = {
    "digits": {"digit": "multiclass"},
    "multilabel": {"digits": "multilabel"},
    "multioutput": {"digits": "multilabel", "count": "multiclass", "largest": "multiclass"},
}
# One CSV row per image, a column per head.
ROW_TASKS = tuple(task for task in TASKS if task not in ("detection", "segmentation"))


def _rows(ds: BuiltinDataset) -> list[dict[str, str]]:
    with ds.labels_csv.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _header(ds: BuiltinDataset) -> list[str]:
    return ds.labels_csv.read_text(encoding="utf-8").splitlines()[0].split(",")


def test_tasks() -> None:
    assert list(TASKS) == [*EXPECTED_HEADS, "detection", "segmentation"]


@pytest.mark.parametrize("task", ROW_TASKS)
def test_writes_expected_files_and_columns(task: str, tmp_path: Path) -> None:
    ds = make_builtin(task, tmp_path, n_images=12, image_size=32)
    assert ds.root == tmp_path and ds.labels_csv == tmp_path / "labels.csv"
    assert ds.task == task and ds.n_images == 12
    assert ds.heads == EXPECTED_HEADS[task]
    assert ds.labels_format == "csv" and ds.boxes_csv is None
    assert _header(ds) == ["image", *EXPECTED_HEADS[task]]
    rows = _rows(ds)
    assert len(rows) == 12
    assert len(list((tmp_path / "images").glob("*.png"))) == 12
    for row in rows:
        assert not Path(row["image"]).is_absolute()
        assert (tmp_path / row["image"]).is_file()
    assert json.loads((tmp_path / "meta.json").read_text())["n_images"] == 12


def test_digits_labels_cover_classes(tmp_path: Path) -> None:
    ds = make_builtin("digits", tmp_path, n_images=200, image_size=32)
    labels = {row["digit"] for row in _rows(ds)}
    assert labels == {str(d) for d in range(10)}


def test_multioutput_labels_are_consistent(tmp_path: Path) -> None:
    ds = make_builtin("multioutput", tmp_path, n_images=120, image_size=32)
    counts = set()
    for row in _rows(ds):
        digits = [int(d) for d in row["digits"].split(" ")]
        assert digits == sorted(set(digits)), "the tag list holds distinct digits, sorted"
        assert all(0 <= d <= 9 for d in digits)
        count = int(row["count"])
        assert 1 <= count <= 4
        assert count >= len(digits)
        assert int(row["largest"]) == max(digits)
        counts.add(count)
    assert counts == {1, 2, 3, 4}


def test_multilabel_and_multioutput_draw_the_same_canvases(tmp_path: Path) -> None:
    multilabel = make_builtin("multilabel", tmp_path / "ml", n_images=20, seed=3, image_size=32)
    multioutput = make_builtin("multioutput", tmp_path / "mo", n_images=20, seed=3, image_size=32)
    assert [r["digits"] for r in _rows(multilabel)] == [r["digits"] for r in _rows(multioutput)]


def test_digits_are_placed_where_counted(tmp_path: Path) -> None:
    # One digit per quadrant: the number of non-empty quadrants is the `count` label.
    ds = make_builtin("multioutput", tmp_path, n_images=40, image_size=32)
    for row in _rows(ds):
        pixels = np.asarray(Image.open(tmp_path / row["image"]))
        quadrants = [pixels[:16, :16], pixels[:16, 16:], pixels[16:, :16], pixels[16:, 16:]]
        inked = sum(int(q.max() > 64) for q in quadrants)
        assert inked == int(row["count"])


@pytest.mark.parametrize("task", TASKS)
def test_images_have_the_right_size_and_are_not_blank(task: str, tmp_path: Path) -> None:
    ds = make_builtin(task, tmp_path, n_images=8, image_size=48)
    for row in _rows(ds):
        with Image.open(tmp_path / row.get("image", row.get("filename"))) as image:
            assert image.size == (48, 48)
            pixels = np.asarray(image)
        assert pixels.max() > 128 and pixels.min() == 0


def test_digit_images_are_jittered(tmp_path: Path) -> None:
    # One more image than sklearn has digits: one source digit is drawn twice, yet no two images
    # are pixel-identical.
    ds = make_builtin("digits", tmp_path, n_images=1798, image_size=32)
    arrays = [np.asarray(Image.open(tmp_path / row["image"])).tobytes() for row in _rows(ds)]
    assert len(set(arrays)) == len(arrays)


@pytest.mark.parametrize("task", TASKS)
def test_same_seed_gives_identical_csv_and_other_seed_differs(task: str, tmp_path: Path) -> None:
    first = make_builtin(task, tmp_path / "a", n_images=30, seed=1, image_size=32)
    second = make_builtin(task, tmp_path / "b", n_images=30, seed=1, image_size=32)
    other = make_builtin(task, tmp_path / "c", n_images=30, seed=2, image_size=32)
    assert first.labels_csv.read_bytes() == second.labels_csv.read_bytes()
    assert first.labels_csv.read_bytes() != other.labels_csv.read_bytes()
    image = "images/00005.png"
    assert (first.root / image).read_bytes() == (second.root / image).read_bytes()


def test_reuse_does_not_rewrite_files(tmp_path: Path) -> None:
    first = make_builtin("multioutput", tmp_path, n_images=10, image_size=32)
    paths = [first.labels_csv, tmp_path / "meta.json", *sorted((tmp_path / "images").iterdir())]
    before = {path: path.stat().st_mtime_ns for path in paths}
    second = make_builtin("multioutput", tmp_path, n_images=10, image_size=32)
    assert second == first
    assert {path: path.stat().st_mtime_ns for path in paths} == before


def test_changed_parameters_regenerate(tmp_path: Path) -> None:
    make_builtin("multilabel", tmp_path, n_images=10, image_size=32)
    ds = make_builtin("multilabel", tmp_path, n_images=6, image_size=40)
    assert len(_rows(ds)) == 6
    images = sorted((tmp_path / "images").glob("*.png"))
    assert len(images) == 6, "PNGs of the earlier, larger generation are removed"
    assert Image.open(images[0]).size == (40, 40)
    assert json.loads((tmp_path / "meta.json").read_text())["image_size"] == 40


def test_incomplete_generation_is_not_reused(tmp_path: Path) -> None:
    first = make_builtin("digits", tmp_path, n_images=5, image_size=32)
    (tmp_path / "meta.json").unlink()  # as if interrupted before the last write
    first.labels_csv.write_text("image,digit\n", encoding="utf-8")
    ds = make_builtin("digits", tmp_path, n_images=5, image_size=32)
    assert len(_rows(ds)) == 5


def test_default_sizes(tmp_path: Path) -> None:
    ds = make_builtin("digits", tmp_path, image_size=16)
    assert ds.n_images == 1797 == len(_rows(ds))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "faces"}, "unknown built-in task"),
        ({"task": "digits", "n_images": 0}, "n_images"),
        ({"task": "digits", "image_size": 8}, "image_size"),
    ],
)
def test_rejects_bad_arguments(kwargs: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=message):
        make_builtin(out_dir=tmp_path, **kwargs)
    assert not (tmp_path / "meta.json").exists()


def test_describe_mentions_every_head_and_label(tmp_path: Path) -> None:
    ds = make_builtin("multioutput", tmp_path, n_images=150, image_size=32)
    text = describe(ds)
    assert "150 images" in text
    for head, kind in ds.heads.items():
        assert f"'{head}' ({kind}" in text
    lines = text.splitlines()
    count_block = lines[lines.index("  head 'count' (multiclass, 4 classes):") + 1 :][:4]
    counted = {line.split(":")[0].strip(): int(line.split(":")[1]) for line in count_block}
    assert set(counted) == {"1", "2", "3", "4"}
    assert sum(counted.values()) == 150
    for digit in range(10):
        assert any(line.strip().startswith(f"{digit}:") for line in lines)


# --- detection: one row per box ----------------------------------------------------------------


def _boxes(ds: BuiltinDataset) -> dict[str, list[tuple[str, int, int, int, int]]]:
    """Filename -> its boxes (class, x1, y1, x2, y2), checking each row's image size."""
    boxes: dict[str, list[tuple[str, int, int, int, int]]] = {}
    for row in _rows(ds):
        with Image.open(ds.root / row["filename"]) as image:
            assert image.size == (int(row["width"]), int(row["height"]))
        corners = (int(row["xmin"]), int(row["ymin"]), int(row["xmax"]), int(row["ymax"]))
        boxes.setdefault(row["filename"], []).append((row["class"], *corners))
    return boxes


def test_detection_writes_images_and_a_box_csv(tmp_path: Path) -> None:
    ds = make_builtin("detection", tmp_path, n_images=12, image_size=32)
    assert ds.task == "detection" and ds.n_images == 12
    assert ds.heads == {"objects": "detection"}
    assert ds.labels_format == "boxcsv"
    assert ds.labels_csv == ds.boxes_csv == tmp_path / "boxes.csv"
    assert not (tmp_path / "labels.csv").exists()
    assert _header(ds) == list(BOX_COLUMNS)
    assert BOX_COLUMNS == ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")
    assert len(list((tmp_path / "images").glob("*.png"))) == 12
    boxes = _boxes(ds)
    assert sorted(boxes) == [f"images/{i:05d}.png" for i in range(1, 13)]
    assert all(1 <= len(b) <= 4 for b in boxes.values())
    assert json.loads((tmp_path / "meta.json").read_text())["task"] == "detection"


def test_detection_boxes_are_tight_and_disjoint(tmp_path: Path) -> None:
    size = 48
    ds = make_builtin("detection", tmp_path, n_images=60, seed=5, image_size=size)
    boxes = _boxes(ds)
    assert len(boxes) == 60
    classes, counts, widths = set(), set(), set()
    for filename, image_boxes in boxes.items():
        pixels = np.asarray(Image.open(tmp_path / filename))
        assert pixels.shape == (size, size)
        covered = np.zeros(pixels.shape, dtype=bool)
        for name, x1, y1, x2, y2 in image_boxes:
            assert name in {str(d) for d in range(10)}
            assert 0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size, "inside, positive area"
            assert not covered[y1:y2, x1:x2].any(), "boxes of one canvas do not overlap"
            covered[y1:y2, x1:x2] = True
            inside = pixels[y1:y2, x1:x2]
            # Tight: the digit's ink touches every side of its box.
            assert inside[0].any() and inside[-1].any()
            assert inside[:, 0].any() and inside[:, -1].any()
            classes.add(name)
            widths.add(x2 - x1)
        assert not pixels[~covered].any(), "every pixel outside the boxes is background"
        counts.add(len(image_boxes))
    assert classes == {str(d) for d in range(10)}
    assert counts == {1, 2, 3, 4}
    assert len(widths) > 5, "boxes vary in size"


def test_detection_boxes_stay_in_their_quadrant(tmp_path: Path) -> None:
    ds = make_builtin("detection", tmp_path, n_images=40, image_size=32)
    for image_boxes in _boxes(ds).values():
        quadrants = set()
        for _, x1, y1, x2, y2 in image_boxes:
            quadrant = (x1 >= 16, y1 >= 16)
            assert (x2 <= 16) != quadrant[0] and (y2 <= 16) != quadrant[1]
            quadrants.add(quadrant)
        assert len(quadrants) == len(image_boxes)


def test_detection_draws_the_multilabel_digits(tmp_path: Path) -> None:
    detection = make_builtin("detection", tmp_path / "det", n_images=20, seed=3, image_size=32)
    multilabel = make_builtin("multilabel", tmp_path / "ml", n_images=20, seed=3, image_size=32)
    present = {
        filename: " ".join(sorted({b[0] for b in image_boxes}))
        for filename, image_boxes in _boxes(detection).items()
    }
    assert present == {row["image"]: row["digits"] for row in _rows(multilabel)}


def test_detection_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = make_builtin("detection", tmp_path / "a", n_images=15, seed=4, image_size=32)
    second = make_builtin("detection", tmp_path / "b", n_images=15, seed=4, image_size=32)
    assert first.labels_csv.read_bytes() == second.labels_csv.read_bytes()
    for path in sorted((first.root / "images").iterdir()):
        assert path.read_bytes() == (second.root / "images" / path.name).read_bytes()


def test_detection_reuse_and_regeneration(tmp_path: Path) -> None:
    first = make_builtin("detection", tmp_path, n_images=6, image_size=32)
    before = first.labels_csv.stat().st_mtime_ns
    assert make_builtin("detection", tmp_path, n_images=6, image_size=32) == first
    assert first.labels_csv.stat().st_mtime_ns == before
    ds = make_builtin("detection", tmp_path, n_images=4, image_size=40)
    assert len(_boxes(ds)) == 4
    assert len(list((tmp_path / "images").glob("*.png"))) == 4
    assert {row["width"] for row in _rows(ds)} == {"40"}


def test_describe_detection(tmp_path: Path) -> None:
    ds = make_builtin("detection", tmp_path, n_images=30, image_size=32)
    text = describe(ds)
    n_boxes = len(_rows(ds))
    assert "30 images" in text
    assert f"'objects' (detection, 10 classes, {n_boxes} boxes" in text
    lines = text.splitlines()
    counted = [int(line.split(":")[1]) for line in lines if line.startswith("    ")]
    assert sum(counted) == n_boxes


# --- segmentation: a mask per image ------------------------------------------------------------


def _pairs(ds: BuiltinDataset) -> list[tuple[np.ndarray, np.ndarray, list[int]]]:
    """Per index row: the image, its mask (checked to be a mode L PNG) and the listed digits."""
    pairs = []
    for row in _rows(ds):
        with Image.open(ds.root / row["image"]) as image, Image.open(ds.root / row["mask"]) as mask:
            assert mask.mode == "L"
            assert mask.size == image.size
            pixels, values = np.asarray(image), np.asarray(mask)
        assert Path(row["image"]).name == Path(row["mask"]).name, "matched by stem"
        pairs.append((pixels, values, [int(d) for d in row["digits"].split()]))
    return pairs


def test_segmentation_writes_images_and_masks(tmp_path: Path) -> None:
    ds = make_builtin("segmentation", tmp_path, n_images=12, image_size=32)
    assert ds.task == "segmentation" and ds.n_images == 12
    assert ds.heads == {"digit_mask": "segmentation"}
    assert ds.labels_format == "masks" and ds.boxes_csv is None
    assert ds.labels_csv == tmp_path / "masks.csv" and ds.masks_dir == tmp_path / "masks"
    assert _header(ds) == list(MASK_COLUMNS)
    names = sorted(p.name for p in (tmp_path / "images").glob("*.png"))
    assert names == [f"{i:05d}.png" for i in range(1, 13)]
    assert sorted(p.name for p in ds.masks_dir.glob("*.png")) == names
    assert len(_pairs(ds)) == 12
    assert {"0": BACKGROUND, **{str(d + 1): str(d) for d in range(10)}} == MASK_VALUES


def test_segmentation_masks_mark_each_digits_strokes(tmp_path: Path) -> None:
    ds = make_builtin("segmentation", tmp_path, n_images=60, seed=5, image_size=32)
    drawn = {}
    for pixels, values, digits in _pairs(ds):
        assert values.max() <= 10
        assert (values == 0).any(), "every canvas has background"
        assert sorted({int(v) - 1 for v in np.unique(values) if v}) == digits
        assert (pixels[values > 0] >= STROKE_MIN).all(), "strokes are clearly inked"
        assert (pixels[values == 0] < STROKE_MIN).all(), "dim pixels are background"
        drawn.update(dict.fromkeys(digits))
    assert set(drawn) == set(range(10))
    # Each drawn digit has strokes: the mask holds as many digit regions as detection has boxes.
    boxes = make_builtin("detection", tmp_path / "det", n_images=60, seed=5, image_size=32)
    for (_, values, _), row in zip(_pairs(ds), _grouped_boxes(boxes), strict=True):
        for name, x1, y1, x2, y2 in row:
            assert (values[y1:y2, x1:x2] == int(name) + 1).any()


def _grouped_boxes(ds: BuiltinDataset) -> list[list[tuple[str, int, int, int, int]]]:
    return [boxes for _, boxes in sorted(_boxes(ds).items())]


def test_segmentation_draws_the_detection_images(tmp_path: Path) -> None:
    seg = make_builtin("segmentation", tmp_path / "seg", n_images=10, seed=3, image_size=32)
    det = make_builtin("detection", tmp_path / "det", n_images=10, seed=3, image_size=32)
    for path in sorted((seg.root / "images").iterdir()):
        assert path.read_bytes() == (det.root / "images" / path.name).read_bytes()


def test_segmentation_tiny_digits_still_have_strokes(tmp_path: Path) -> None:
    # At 16 px a digit can be 4 px wide: every drawn digit (a box of detection's, same seed)
    # still has stroke pixels in the mask.
    ds = make_builtin("segmentation", tmp_path / "seg", n_images=40, seed=1, image_size=16)
    det = make_builtin("detection", tmp_path / "det", n_images=40, seed=1, image_size=16)
    for (_, values, _), boxes in zip(_pairs(ds), _grouped_boxes(det), strict=True):
        assert {int(v) - 1 for v in np.unique(values) if v} == {int(b[0]) for b in boxes}


def test_segmentation_same_seed_gives_identical_files(tmp_path: Path) -> None:
    first = make_builtin("segmentation", tmp_path / "a", n_images=12, seed=4, image_size=32)
    second = make_builtin("segmentation", tmp_path / "b", n_images=12, seed=4, image_size=32)
    other = make_builtin("segmentation", tmp_path / "c", n_images=12, seed=5, image_size=32)
    assert first.labels_csv.read_bytes() == second.labels_csv.read_bytes()
    for folder in ("images", "masks"):
        files = sorted((first.root / folder).iterdir())
        assert len(files) == 12
        for path in files:
            assert path.read_bytes() == (second.root / folder / path.name).read_bytes()
    masks = [(first.root / "masks" / p.name).read_bytes() for p in files]
    assert masks != [(other.root / "masks" / p.name).read_bytes() for p in files]


def test_segmentation_regeneration_drops_old_masks(tmp_path: Path) -> None:
    make_builtin("segmentation", tmp_path, n_images=8, image_size=32)
    ds = make_builtin("segmentation", tmp_path, n_images=5, image_size=40)
    assert len(list(ds.masks_dir.glob("*.png"))) == 5
    assert {np.asarray(Image.open(p)).shape for p in ds.masks_dir.glob("*.png")} == {(40, 40)}


def test_describe_segmentation(tmp_path: Path) -> None:
    ds = make_builtin("segmentation", tmp_path, n_images=30, image_size=32)
    text = describe(ds)
    assert "30 images and 30 masks" in text
    assert "'digit_mask' (segmentation, 11 classes" in text
    assert f"{BACKGROUND}: 30" in text


@pytest.fixture
def small_builtin(monkeypatch: pytest.MonkeyPatch) -> None:
    """read_samples generates 12 images of 32 px instead of the default 2,000 of 64 px."""
    small = functools.partial(make_builtin, n_images=12, image_size=32)
    monkeypatch.setattr("pictag.data.sources.make_builtin", small)


@pytest.mark.usefixtures("small_builtin")
def test_read_samples_gives_mask_labels(tmp_path: Path) -> None:
    data = DataConfig(format="builtin", builtin="segmentation")
    result = read_samples(data, {}, workdir=tmp_path)
    assert result.format == "builtin" and len(result.samples) == 12
    assert "built-in 'segmentation'" in result.description and "12 masks" in result.description
    head = result.heads["digit_mask"]
    assert head.kind == "segmentation" and head.masks == str(tmp_path / "segmentation" / "masks")
    assert head.mask_values == MASK_VALUES
    assert not [p for p in result.problems if p.severity == "error"]
    classes = set()
    for sample in result.samples:
        label = sample.labels["digit_mask"]
        assert isinstance(label, MaskLabel) and label.size == (32, 32)
        assert label.path is not None and label.path.stem == sample.path.stem
        assert BACKGROUND in label.classes
        classes.update(label.classes)
    assert classes <= {BACKGROUND, *(str(d) for d in range(10))}


@pytest.mark.usefixtures("small_builtin")
def test_read_samples_keeps_configured_head_options(tmp_path: Path) -> None:
    data = DataConfig(format="builtin", builtin="segmentation")
    configured = {"digit_mask": HeadConfig(kind="multiclass", masks="elsewhere", weight=2.0)}
    head = read_samples(data, configured, workdir=tmp_path).heads["digit_mask"]
    assert head.kind == "segmentation" and head.weight == 2.0
    assert head.masks == str(tmp_path / "segmentation" / "masks")
    with pytest.raises(ValueError, match="no head 'mask'"):
        read_samples(data, {"mask": HeadConfig(kind="segmentation")}, workdir=tmp_path)
