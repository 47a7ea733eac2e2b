"""Tests for the box checks shared by the object sources (pictag.data.box_checks,
pictag.data.sources_boxes)."""

from pathlib import Path

import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.box_checks import BoxRow, ImageEntry, check_box, check_entry
from pictag.data.sources_boxes import (
    build_samples,
    head_labels,
    image_size,
    name_variants,
    object_heads,
)
from pictag.heads import get_kind
from pictag.heads.boxes import MAX_OBJECTS, Objects

SIZE = (100, 50)


def _row(x1: float, y1: float, x2: float, y2: float, normalised: bool = False) -> BoxRow:
    return BoxRow("cat", (x1, y1, x2, y2), "boxes.csv:7", normalised=normalised)


def _image(path: Path, size: tuple[int, int] = SIZE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 10)).save(path)
    return path


def test_a_box_inside_is_kept_as_is() -> None:
    assert check_box(_row(10, 5, 90, 45), SIZE, None) == (("cat", 10, 5, 90, 45), None)


def test_normalised_corners_are_scaled_by_the_real_size() -> None:
    box, problem = check_box(_row(0.1, 0.2, 0.5, 1.0, normalised=True), SIZE, None)
    assert problem is None
    assert box == pytest.approx(("cat", 10, 10, 50, 50))


@pytest.mark.parametrize("corners", [(10, 5, 10, 45), (10, 5, 90, 5)])
def test_zero_width_or_height_is_an_error(corners: tuple[float, ...]) -> None:
    box, problem = check_box(_row(*corners), SIZE, Path("a.jpg"))
    assert box is None
    assert (problem.kind, problem.severity, problem.where) == ("bad_box", "error", "boxes.csv:7")
    assert "width 0" in problem.message or "height 0" in problem.message
    assert problem.path == Path("a.jpg")


def test_corners_the_wrong_way_round_are_an_error() -> None:
    box, problem = check_box(_row(90, 5, 10, 45), SIZE, None)
    assert box is None
    assert problem.kind == "bad_box"
    assert "width -80" in problem.message


def test_a_coordinate_that_is_not_a_number_is_an_error() -> None:
    box, problem = check_box(_row(float("nan"), 5, 10, 45), SIZE, None)
    assert box is None
    assert problem.kind == "bad_box"


def test_a_box_partly_outside_is_clipped_with_a_warning() -> None:
    box, problem = check_box(_row(-20, 5, 130, 45), SIZE, None)
    assert box == ("cat", 0, 5, 100, 45)
    assert (problem.kind, problem.severity) == ("box_clipped", "warning")
    assert "30 px past the 100x50 image" in problem.message


def test_a_box_a_pixel_past_the_edge_is_clipped_silently() -> None:
    # VOC's 1-based corners: xmax == width + 1 is an honest box, not worth a warning.
    assert check_box(_row(1, 1, 101, 51), SIZE, None) == (("cat", 1, 1, 100, 50), None)


@pytest.mark.parametrize("corners", [(100, 5, 120, 45), (-30, 5, 0, 45), (10, 60, 20, 70)])
def test_a_box_wholly_outside_is_an_error(corners: tuple[float, ...]) -> None:
    box, problem = check_box(_row(*corners), SIZE, None)
    assert box is None
    assert (problem.kind, problem.severity) == ("box_outside", "error")


def test_a_stated_size_that_differs_is_a_warning_and_the_real_size_is_used() -> None:
    entry = ImageEntry(Path("a.jpg"), "a.xml", stated=(50, 100), boxes=[_row(10, 5, 90, 45)])
    objects, problems = check_entry(entry, SIZE)
    assert objects == Objects(SIZE, (("cat", 10, 5, 90, 45),))
    assert [(p.kind, p.severity, p.where) for p in problems] == [
        ("size_mismatch", "warning", "a.xml")
    ]
    assert "sides swapped" in problems[0].message
    unknown = ImageEntry(Path("a.jpg"), "a.xml", stated=(0, 0))  # a tool that did not know
    assert check_entry(unknown, SIZE)[1] == []


def test_more_than_max_objects_keeps_the_first_with_a_warning() -> None:
    rows = [_row(i % 90, 0, i % 90 + 5, 5) for i in range(MAX_OBJECTS + 3)]
    objects, problems = check_entry(ImageEntry(Path("a.jpg"), "a.txt", boxes=rows), SIZE)
    assert len(objects.boxes) == MAX_OBJECTS
    assert [(p.kind, p.severity) for p in problems] == [("too_many_boxes", "warning")]


def test_build_samples_drops_images_with_errors_and_counts_negatives(tmp_path: Path) -> None:
    good = ImageEntry(_image(tmp_path / "a.jpg"), "a", boxes=[_row(10, 5, 90, 45)])
    bad = ImageEntry(_image(tmp_path / "b.jpg"), "b", boxes=[_row(90, 5, 10, 45)])
    empty = ImageEntry(_image(tmp_path / "c.jpg"), "c")
    (tmp_path / "d.jpg").write_bytes(b"not an image")
    broken = ImageEntry(tmp_path / "d.jpg", "d", boxes=[_row(10, 5, 90, 45)])
    heads = {"boxes": HeadConfig(kind="detection"), "tags": HeadConfig(kind="multilabel")}
    samples, problems, stats = build_samples([good, bad, empty, broken], heads)
    assert [s.where for s in samples] == ["a", "c"]
    assert samples[0].labels == {
        "boxes": Objects(SIZE, (("cat", 10, 5, 90, 45),)),
        "tags": ("cat",),
    }
    assert samples[1].labels == {"boxes": Objects(SIZE), "tags": ()}
    assert {(p.kind, p.where) for p in problems} == {
        ("bad_box", "boxes.csv:7"),
        ("unreadable", "d"),
    }
    assert (stats.images, stats.boxes, stats.negatives, stats.classes) == (2, 1, 1, {"cat"})


def test_names_without_a_box_are_tags_only() -> None:
    kinds = {"tags": get_kind("multilabel"), "boxes": get_kind("detection")}
    objects = Objects(SIZE, (("dog", 1, 1, 5, 5),))
    labels = head_labels(kinds, objects, ["person", "dog"])
    assert labels == {"tags": ("dog", "person"), "boxes": objects}


def test_object_heads_default_and_kinds_that_cannot_read_objects() -> None:
    assert object_heads(DataConfig(), {}, "x") == {"objects": HeadConfig(kind="multilabel")}
    both = {"tags": HeadConfig(kind="multilabel"), "boxes": HeadConfig(kind="detection")}
    assert object_heads(DataConfig(), both, "x") == both
    with pytest.raises(ValueError, match=r"heads\.label\.kind: a multiclass head .*multilabel"):
        object_heads(DataConfig(), {"label": HeadConfig(kind="multiclass")}, "a COCO file")


def test_class_names_differing_in_case_or_spacing_are_a_warning() -> None:
    rows = [
        BoxRow(n, (1, 1, 2, 2), f"b.csv:{i}") for i, n in enumerate(["raccoon"] * 3 + ["Raccoon"])
    ]
    entries = [
        ImageEntry(Path("a.jpg"), "a", boxes=rows, names=["Traffic  light", "traffic light"])
    ]
    problems = name_variants(entries)
    assert [(p.kind, p.severity) for p in problems] == [("class_variants", "warning")] * 2
    assert problems[0].where == "b.csv:3"
    assert "'raccoon' (3), 'Raccoon' (1)" in problems[0].message


def test_image_size_follows_the_exif_orientation(tmp_path: Path) -> None:
    path = tmp_path / "turned.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: pictag decodes it upright, 50 wide and 100 high
    Image.new("RGB", SIZE).save(path, exif=exif)
    assert image_size(path) == (50, 100)
    assert image_size(_image(tmp_path / "plain.png")) == SIZE
