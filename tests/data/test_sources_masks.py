"""Tests for the mask source (pictag.data.sources_masks), on tiny images and masks written in
tmp_path: class-index, palette, trimap, instance, colour and 16-bit masks, file-name matching,
and every problem a mask can have."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.mask_files import find_masks, mask_label, mask_table
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.data.sources_boxes import image_size
from pictag.data.sources_masks import attach_masks, read_masks
from pictag.heads.masks import IGNORE, MaskLabel

SIZE = (12, 8)  # width, height of every test image


def _image(path: Path, size: tuple[int, int] = SIZE, **save: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 90, 160)).save(path, **save)
    return path


def _mask(path: Path, values: object, mode: str | None = None) -> Path:
    """A mask file from an array (``[h, w]``, or ``[h, w, 3]`` for RGB)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.asarray(values)
    if mode == "P":
        image = Image.fromarray(array.astype(np.uint8), "L").convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, 0)])
    elif mode == "I;16":
        image = Image.fromarray(array.astype(np.uint16))
    else:
        image = Image.fromarray(array.astype(np.uint8), mode)
    image.save(path)
    return path


def _halves(left: int, right: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A ``[h, w]`` mask with value ``left`` on the left half and ``right`` on the right."""
    width, height = size
    values = np.full((height, width), left)
    values[:, width // 2 :] = right
    return values


def _head(masks: Path, **settings: object) -> HeadConfig:
    return HeadConfig(kind="segmentation", masks=str(masks), **settings)


def _read(tmp_path: Path, head: HeadConfig, name: str = "seg"):
    return read_masks(DataConfig(format="masks", images=[str(tmp_path / "images")]), {name: head})


def _label(result, stem: str, head: str = "seg") -> MaskLabel | None:
    return next(s.labels[head] for s in result.samples if s.path.stem == stem)


def _by_kind(problems: list[Problem]) -> dict[str, Problem]:
    return {p.kind: p for p in problems}


def test_find_masks_matches_suffixes_skips_hidden_and_prefers_the_exact_name(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "masks"
    for name in ("a.png", "b_mask.png", "c-mask.bmp", "d_trimap.png", "e_Seg.tif", "f.png"):
        _mask(folder / name, _halves(0, 1))
    _mask(folder / "sub" / "g_gt.gif", _halves(0, 1))
    _mask(folder / "f_mask.png", _halves(0, 1))  # a second mask for f: the exact name wins
    _mask(folder / "._a.png", _halves(0, 1))  # macOS AppleDouble file
    _mask(folder / ".hidden.png", _halves(0, 1))
    (folder / "notes.txt").write_text("not a mask")
    masks, problems = find_masks(folder)
    assert {stem: path.name for stem, path in masks.items()} == {
        "a": "a.png",
        "b": "b_mask.png",
        "c": "c-mask.bmp",
        "d": "d_trimap.png",
        "e": "e_Seg.tif",
        "f": "f.png",
        "g": "g_gt.gif",
    }
    assert [(p.kind, p.severity, Path(p.where).name) for p in problems] == [
        ("duplicate_mask", "warning", "f_mask.png")
    ]
    assert "f.png is used" in problems[0].message


def test_a_mask_named_exactly_like_an_image_with_a_mask_suffix(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "scan_gt.png")  # the image's own stem ends in `_gt`
    _mask(tmp_path / "masks" / "scan_gt.png", _halves(0, 1), "L")
    result = _read(tmp_path, _head(tmp_path / "masks"))
    assert result.problems == []
    assert _label(result, "scan_gt").path == tmp_path / "masks" / "scan_gt.png"


def test_mask_table_default_labels_values_colours_and_bad_keys() -> None:
    default = mask_table("seg", HeadConfig())
    assert default[0] == (0, 0, "0") and default[254] == (254, 254, "254")
    assert default[-1] == (IGNORE, IGNORE, "ignore") and len(default) == 256
    named = mask_table("seg", HeadConfig(labels=["background", "cat"]))
    assert named == ((0, 0, "background"), (1, 1, "cat"), (255, 255, "ignore"))
    values = mask_table("seg", HeadConfig(mask_values={0: "background", "1-255": "person"}))
    assert values == ((0, 0, "background"), (1, 255, "person"))
    colours = HeadConfig(mask_colors={"#ff0000": "cat", "0,0,0": "background"}, mask_values={})
    assert mask_table("seg", colours) == ((0xFF0000, 0xFF0000, "cat"), (0, 0, "background"))
    with pytest.raises(ValueError, match=r"heads\.pet\.mask_values: mask value 'x'"):
        mask_table("pet", HeadConfig(mask_values={"x": "cat"}))
    with pytest.raises(ValueError, match=r"heads\.pet\.mask_colors: mask colour '#12'"):
        mask_table("pet", HeadConfig(mask_colors={"#12": "cat"}))


def test_class_index_masks_read_with_the_default_table(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    values = _halves(0, 2)
    values[0, 0] = 1
    _mask(tmp_path / "masks" / "a.png", values, "L")
    result = _read(tmp_path, _head(tmp_path / "masks"))
    assert result.format == "masks"
    assert result.problems == []
    label = _label(result, "a")
    assert label == MaskLabel(
        SIZE, tmp_path / "masks" / "a.png", label.table, False, (), ("0", "1", "2")
    )
    assert label.table == mask_table("seg", HeadConfig())
    assert result.heads == {"seg": _head(tmp_path / "masks")}
    assert result.description == "masks images: 1 images, head seg: 1 masks"


def test_palette_png_with_void_border_named_by_labels(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "2007_000032.jpg")
    values = _halves(0, 2)
    values[0, :] = IGNORE  # VOC's void border
    _mask(tmp_path / "masks" / "2007_000032.png", values, "P")
    head = _head(tmp_path / "masks", labels=["background", "aeroplane", "bicycle"])
    result = _read(tmp_path, head)
    assert result.problems == []
    label = _label(result, "2007_000032")
    assert label.classes == ("background", "bicycle")  # ignore is no class; table order
    assert not label.colour


def test_trimaps_with_mask_values(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "Abyssinian_1.jpg")
    values = _halves(2, 1)
    values[:, 5:7] = 3  # the unclassified band between pet and background
    _mask(tmp_path / "trimaps" / "Abyssinian_1.png", values, "L")
    head = _head(tmp_path / "trimaps", mask_values={1: "pet", 2: "background", 3: "ignore"})
    label = _label(_read(tmp_path, head, "pet"), "Abyssinian_1", "pet")
    assert label.classes == ("pet", "background")
    assert label.table == ((1, 1, "pet"), (2, 2, "background"), (3, 3, "ignore"))


def test_instance_masks_with_a_range_and_a_mask_suffix(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "FudanPed00001.png")
    values = _halves(0, 1)
    values[0, -1] = 2  # a second pedestrian
    _mask(tmp_path / "PedMasks" / "FudanPed00001_mask.png", values, "L")
    head = _head(tmp_path / "PedMasks", mask_values={0: "background", "1-255": "person"})
    result = _read(tmp_path, head)
    assert result.problems == []
    label = _label(result, "FudanPed00001")
    assert label.path.name == "FudanPed00001_mask.png"
    assert label.classes == ("background", "person")


def test_colour_mask_with_mask_colors(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    rgb = np.zeros((SIZE[1], SIZE[0], 3))
    rgb[:, 6:] = (255, 0, 0)
    _mask(tmp_path / "masks" / "a.png", rgb, "RGB")
    head = _head(tmp_path / "masks", mask_colors={"0,0,0": "background", "#ff0000": "cat"})
    result = _read(tmp_path, head)
    assert result.problems == []
    label = _label(result, "a")
    assert label.colour and label.classes == ("background", "cat")


def test_sixteen_bit_and_grey_rgb_masks(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "deep.png")
    _mask(tmp_path / "masks" / "deep.png", _halves(0, 1000), "I;16")
    _image(tmp_path / "images" / "grey.png")
    grey = np.repeat(_halves(0, 1)[..., None], 3, axis=2)  # class indices saved as RGB
    _mask(tmp_path / "masks" / "grey.png", grey, "RGB")
    head = _head(tmp_path / "masks", mask_values={0: "background", "1-1000": "thing"})
    result = _read(tmp_path, head)
    assert result.problems == []
    assert _label(result, "deep").classes == ("background", "thing")
    grey_label = _label(result, "grey")
    assert grey_label.colour and grey_label.classes == ("background", "thing")
    assert grey_label.table == ((0, 0, "background"), (0x010101, 0xFFFFFF, "thing"))


def test_an_image_without_a_mask_has_no_label_for_that_head_only(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    _image(tmp_path / "images" / "b.png")
    _mask(tmp_path / "masks" / "a.png", _halves(0, 1), "L")
    head = _head(tmp_path / "masks")
    # Beside another head's label, b keeps its sample with no mask for this head.
    tagged = [Sample(tmp_path / "images" / f"{n}.png", {"tags": ("x",)}) for n in "ab"]
    samples, problems = attach_masks(tagged, {"seg": head})
    labels = {s.path.stem: s.labels for s in samples}
    assert labels["b"] == {"tags": ("x",), "seg": None} and labels["a"]["seg"] is not None
    assert [(p.kind, p.severity) for p in problems] == [("missing_mask", "warning")]
    assert "b.png" in problems[0].message
    # With masks as its only labels, b has nothing to teach: left out, with a warning.
    result = _read(tmp_path, head)
    assert [s.path.stem for s in result.samples] == ["a"]
    assert [p.kind for p in result.problems] == ["missing_mask", "no_mask"]
    assert "left out: b.png" in result.problems[1].message
    assert result.description == "masks images: 1 images, head seg: 1 masks"


def test_bad_masks_are_reported_with_their_file_and_errors_drop_the_image(
    tmp_path: Path,
) -> None:
    images, masks = tmp_path / "images", tmp_path / "masks"
    for stem in ("good", "small", "unknown", "rgb", "broken", "empty", "single"):
        _image(images / f"{stem}.png")
    _mask(masks / "good.png", _halves(0, 1), "L")
    _mask(masks / "small.png", _halves(0, 1, (8, 12)), "L")
    _mask(masks / "unknown.png", _halves(0, 7), "L")
    rgb = np.zeros((SIZE[1], SIZE[0], 3))
    rgb[:, 6:] = (0, 128, 0)
    _mask(masks / "rgb.png", rgb, "RGB")
    (masks / "broken.png").write_bytes(b"not a png")
    _mask(masks / "empty.png", np.full((SIZE[1], SIZE[0]), 3), "L")
    _mask(masks / "single.png", _halves(1, 1), "L")
    for orphan in ("zz1.png", "zz2_mask.png"):
        _mask(masks / orphan, _halves(0, 1), "L")
    head = _head(masks, mask_values={0: "background", 1: "cat", 3: "ignore"})
    result = _read(tmp_path, head)
    assert sorted(s.path.stem for s in result.samples) == ["empty", "good", "single"]
    found = _by_kind(result.problems)
    assert len(result.problems) == len(found) == 7
    expected = {
        "size_mismatch": ("small", "error", "mask is 8x12, image 12x8"),
        "unknown_value": ("unknown", "error", "values no class covers: 7"),
        "colour_mask": ("rgb", "error", "#000000, #008000"),
        "unreadable": ("broken", "error", "cannot read the mask"),
        "empty_mask": ("empty", "warning", "every pixel is ignored"),
        "one_class_mask": ("single", "warning", "one class: 'cat'"),
    }
    for kind, (stem, severity, text) in expected.items():
        problem = found[kind]
        assert (problem.where, problem.path) == (str(masks / f"{stem}.png"), images / f"{stem}.png")
        assert problem.severity == severity and text in problem.message, problem
    assert "nearest-neighbour" in found["size_mismatch"].fix
    assert "heads.seg.mask_values" in found["unknown_value"].fix
    assert "heads.seg.mask_colors" in found["colour_mask"].fix
    orphan = found["orphan_mask"]
    assert (orphan.severity, orphan.where, orphan.fix) == (
        "warning",
        str(masks),
        "remove them or add the images",
    )
    assert "2 mask(s)" in orphan.message and "zz2_mask.png" in orphan.message


def test_a_binary_0_255_mask_read_by_the_default_table_gets_a_hint(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    _mask(tmp_path / "masks" / "a.png", _halves(0, 255), "L")
    problem = _read(tmp_path, _head(tmp_path / "masks")).problems[0]
    assert problem.kind == "one_class_mask" and "'0'" in problem.message
    assert "heads.seg.mask_values: {0: background, 255: ...}" in problem.fix


def test_greyscale_mask_with_mask_colors_and_colour_values_not_covered(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "grey.png")
    _mask(tmp_path / "masks" / "grey.png", _halves(0, 1), "L")
    _image(tmp_path / "images" / "blue.png")
    rgb = np.zeros((SIZE[1], SIZE[0], 3))
    rgb[:, 6:] = (0, 0, 255)
    _mask(tmp_path / "masks" / "blue.png", rgb, "RGB")
    result = _read(tmp_path, _head(tmp_path / "masks", mask_colors={"#000000": "background"}))
    assert result.samples == []
    found = _by_kind(result.problems)
    assert found["value_mask"].path.name == "grey.png"
    assert "#0000ff" in found["unknown_value"].message
    assert "heads.seg.mask_colors" in found["unknown_value"].fix


def test_mask_of_an_exif_turned_jpeg_matches_its_upright_size(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # stored 12x8, shown turned: 8x12
    image = _image(tmp_path / "photo.jpg", exif=exif)
    upright = _mask(tmp_path / "upright.png", _halves(0, 1, (8, 12)), "L")
    stored = _mask(tmp_path / "stored.png", _halves(0, 1), "L")
    cfg, table = HeadConfig(), mask_table("seg", HeadConfig())
    size = image_size(image)
    assert size == (8, 12)
    label, problems = mask_label(image, size, upright, "seg", cfg, table)
    assert label is not None and label.size == (8, 12) and problems == []
    label, problems = mask_label(image, size, stored, "seg", cfg, table)
    assert label is None and "sides swapped" in problems[0].message


def test_read_masks_splits_from_folders_and_skips_a_mask_folder_inside_the_root(
    tmp_path: Path,
) -> None:
    root = tmp_path / "images"
    for split, stem in (("train", "a"), ("train", "b"), ("val", "c")):
        _image(root / split / f"{stem}.png")
        _mask(root / "masks" / f"{stem}_mask.png", _halves(0, 1), "L")
    result = read_masks(
        DataConfig(format="masks", images=[str(root)]), {"seg": _head(root / "masks")}
    )
    assert result.problems == []
    assert {s.path.stem: s.split for s in result.samples} == {
        "a": "train",
        "b": "train",
        "c": "val",
    }
    assert result.description == (
        "masks images: 3 images, head seg: 3 masks, splits train 2, val 1"
    )


def test_attach_masks_keeps_other_labels_and_drops_images_that_share_a_stem(
    tmp_path: Path,
) -> None:
    samples = [
        Sample(_image(tmp_path / "x" / "a.png"), {"kind": "cat"}, "train", "a"),
        Sample(_image(tmp_path / "x" / "b.png"), {"kind": "dog"}, None, "b"),
        Sample(_image(tmp_path / "y" / "b.png"), {"kind": "dog"}, None, "b2"),
    ]
    for stem in ("a", "b"):
        _mask(tmp_path / "masks" / f"{stem}.png", _halves(0, 1), "L")
    heads = {"kind": HeadConfig(), "seg": _head(tmp_path / "masks")}
    kept, problems = attach_masks(samples, heads)
    assert len(kept) == 1
    assert kept[0].labels["kind"] == "cat" and kept[0].labels["seg"].classes == ("0", "1")
    assert (kept[0].split, kept[0].where) == ("train", "a")
    assert [(p.kind, p.severity) for p in problems] == [("shared_stem", "error")] * 2


def test_configuration_errors_name_the_key(tmp_path: Path) -> None:
    _image(tmp_path / "images" / "a.png")
    with pytest.raises(ValueError, match=r"heads\.seg\.masks: mask folder not found"):
        _read(tmp_path, _head(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match=r"heads\.seg\.masks: set the mask folder"):
        _read(tmp_path, HeadConfig(kind="segmentation"))
    with pytest.raises(ValueError, match=r"heads\.NAME\.masks: set the mask folder"):
        read_masks(DataConfig(format="masks", images=[str(tmp_path / "images")]), {})
    _mask(tmp_path / "masks" / "other.png", _halves(0, 1), "L")
    with pytest.raises(ValueError, match=r"heads\.seg\.masks: no mask in .* is named like"):
        _read(tmp_path, _head(tmp_path / "masks"))
    with pytest.raises(ValueError, match=r"heads\.seg\.masks: the mask folder .* holds"):
        _read(tmp_path, _head(tmp_path))
    (tmp_path / "empty").mkdir()
    empty = DataConfig(format="masks", images=[str(tmp_path / "empty")])
    with pytest.raises(ValueError, match=r"data\.images: no images under"):
        read_masks(empty, {"seg": _head(tmp_path / "masks")})
