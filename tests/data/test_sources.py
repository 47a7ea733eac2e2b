"""Tests for pictag.data.sources: format detection, folder trees, file-name patterns, the built-in
set and the real MIML scenes CSV (skipped when ../shared/data is absent). The CSV and annotation
formats have their own test files."""

from pathlib import Path

import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.sources import detect_format, read_samples

SHARED_DATA = Path(__file__).parents[2].parent / "shared" / "data"


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    jpeg = path.suffix.lower() in (".jpg", ".jpeg")
    # Content need not match the name here: sources only list files, they do not decode them.
    Image.new("RGB", (2, 2), (10, 10, 200)).save(path, format="JPEG" if jpeg else "PNG")
    return path


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (DataConfig(labels="x/instances.JSON"), "coco"),
        (DataConfig(labels="x/labels.tsv", pattern="(?P<a>.)"), "csv"),
        (DataConfig(images=["x"], pattern="(?P<a>.)"), "filename"),
        (DataConfig(images=["x"]), "folder"),
    ],
)
def test_detect_format(data: DataConfig, expected: str) -> None:
    assert detect_format(data) == expected


def test_detect_voc_folder(tmp_path: Path) -> None:
    (tmp_path / "Annotations").mkdir()
    assert detect_format(DataConfig(images=[str(tmp_path)])) == "folder"
    (tmp_path / "JPEGImages").mkdir()
    assert detect_format(DataConfig(images=[str(tmp_path)])) == "voc"


def test_folder_tree_without_splits(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    for name in ("cat/b.png", "cat/A.JPG", "cat/deep/c.webp", "dog/d.Jpeg", "dog/e.TIFF"):
        _image(root / name)
    _image(root / "cat" / ".hidden.png")
    _image(root / ".thumbs" / "x.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    _image(root / "stray.png")
    result = read_samples(DataConfig(images=[str(root)]), {})
    assert result.format == "folder"
    assert result.heads == {"label": HeadConfig(kind="multiclass")}
    got = [(s.path.relative_to(root).as_posix(), s.labels["label"]) for s in result.samples]
    assert got == [
        ("cat/A.JPG", "cat"),
        ("cat/b.png", "cat"),
        ("cat/deep/c.webp", "cat"),
        ("dog/d.Jpeg", "dog"),
        ("dog/e.TIFF", "dog"),
    ]
    assert all(s.split is None and s.where == str(s.path) for s in result.samples)
    (stray,) = result.problems
    assert stray.path == root / "stray.png" and stray.severity == "warning"
    assert "5 images in 2 classes" in result.description


def test_folder_tree_with_splits_and_several_roots(tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for name in ("train/cat/1.png", "train/dog/2.png", "valid/cat/3.png", "test/dog/4.png"):
        _image(first / name)
    _image(second / "bird" / "5.png")
    data = DataConfig(images=[str(first), str(second)])
    result = read_samples(data, {"animal": HeadConfig()})
    got = {s.path.name: (s.labels["animal"], s.split) for s in result.samples}
    assert got == {
        "1.png": ("cat", "train"),
        "2.png": ("dog", "train"),
        "3.png": ("cat", "val"),
        "4.png": ("dog", "test"),
        "5.png": ("bird", None),
    }
    assert set(result.heads) == {"animal"}
    assert "splits train 2, val 1, test 1" in result.description


def test_folder_class_named_test_is_a_class_not_a_split(tmp_path: Path) -> None:
    _image(tmp_path / "test" / "1.png")
    _image(tmp_path / "other" / "2.png")
    result = read_samples(DataConfig(images=[str(tmp_path)]), {})
    assert [(s.labels["label"], s.split) for s in result.samples] == [
        ("other", None),
        ("test", None),
    ]


def test_folder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"data\.images"):
        read_samples(DataConfig(), {})
    with pytest.raises(ValueError, match="not found"):
        read_samples(DataConfig(images=[str(tmp_path / "nope")]), {})
    _image(tmp_path / "flat.png")
    with pytest.raises(ValueError, match="no images in class folders"):
        read_samples(DataConfig(images=[str(tmp_path)]), {})
    two = {"a": HeadConfig(), "b": HeadConfig()}
    with pytest.raises(ValueError, match="one head"):
        read_samples(DataConfig(images=[str(tmp_path)]), two)
    _image(tmp_path / "cat" / "1.png")
    tags = {"label": HeadConfig(kind="multilabel")}
    with pytest.raises(ValueError, match=r"heads\.label\.kind must be multiclass for a folder"):
        read_samples(DataConfig(images=[str(tmp_path)]), tags)


def test_filename_pattern(tmp_path: Path) -> None:
    for name in (
        "train/34_1_2_20170104.jpg.chip.jpg",
        "test/8_0_0_20170109.jpg.chip.jpg",
        "61_1_20170109142408075.jpg.chip.jpg",  # a real UTKFace name with a field missing
    ):
        _image(tmp_path / name)
    (tmp_path / "notes_1_2_.txt").write_text("not an image: never matched")
    data = DataConfig(images=[str(tmp_path)], pattern=r"(?P<age>\d+)_(?P<sex>\d)_(?P<race>\d)_")
    heads = {"age": HeadConfig(), "gender": HeadConfig(group="sex")}
    result = read_samples(data, heads)
    assert result.format == "filename"
    got = {s.path.name[:8]: (s.labels, s.split) for s in result.samples}
    assert got == {
        "34_1_2_2": ({"age": "34", "gender": "1"}, "train"),
        "8_0_0_20": ({"age": "8", "gender": "0"}, "test"),
    }
    (problem,) = result.problems
    assert problem.kind == "no_match" and problem.severity == "warning"
    assert problem.path == tmp_path / "61_1_20170109142408075.jpg.chip.jpg"
    assert "3 images, 2 match" in result.description


def test_filename_pattern_heads_from_groups_and_errors(tmp_path: Path) -> None:
    _image(tmp_path / "red-car.png")
    data = DataConfig(images=[str(tmp_path)], pattern=r"(?P<colour>[a-z]+)-(?P<kind>[a-z]+)")
    result = read_samples(data, {})
    assert result.heads == {"colour": HeadConfig(), "kind": HeadConfig()}
    assert result.samples[0].labels == {"colour": "red", "kind": "car"}
    tags = {"colour": HeadConfig(kind="multilabel", separator="-", group="colour")}
    assert read_samples(data, tags).samples[0].labels == {"colour": ("red",)}
    with pytest.raises(ValueError, match="no group 'size'"):
        read_samples(data, {"size": HeadConfig()})
    with pytest.raises(ValueError, match="not a valid regular expression"):
        read_samples(DataConfig(images=[str(tmp_path)], pattern="(?P<a>"), {})


def test_all_heads_keeps_every_group_and_changes_only_the_set_keys(tmp_path: Path) -> None:
    # Issue 14, case 2: `--set heads.age.bins=...` must not drop the gender and race heads.
    _image(tmp_path / "34_1_2_x.jpg")
    pattern = r"(?P<age>\d+)_(?P<gender>\d)_(?P<race>\d)_"
    data = DataConfig(images=[str(tmp_path)], pattern=pattern, all_heads=True)
    configured = {"age": HeadConfig(bins=[13.0, 20.0]), "sex": HeadConfig(group="gender")}
    result = read_samples(data, configured)
    assert list(result.heads) == ["age", "gender", "race", "sex"]
    assert result.samples[0].labels == {"age": "34", "gender": "1", "race": "2", "sex": "1"}
    assert result.heads["age"].bins == [13.0, 20.0]
    assert result.heads["gender"] == HeadConfig()
    # A configured head the pattern does not name is still an error, as without all_heads.
    with pytest.raises(ValueError, match="no group 'sex'"):
        read_samples(data, {"sex": HeadConfig(labels=["m", "f"])})


def test_all_heads_refines_the_one_head_of_a_folder_tree_and_a_zero_one_csv(
    tmp_path: Path,
) -> None:
    _image(tmp_path / "tree" / "cat" / "a.png")
    tree = DataConfig(images=[str(tmp_path / "tree")], all_heads=True)
    result = read_samples(tree, {"label": HeadConfig(label_smoothing=0.1)})
    assert result.heads["label"].label_smoothing == 0.1
    _image(tmp_path / "b.png")
    (tmp_path / "labels.csv").write_text("image,sea,sky\nb.png,1,0\n", encoding="utf-8")
    table = DataConfig(labels=str(tmp_path / "labels.csv"), all_heads=True)
    result = read_samples(table, {"tags": HeadConfig(weight=2.0)})
    assert result.heads["tags"].kind == "multilabel" and result.heads["tags"].weight == 2.0
    assert result.samples[0].labels == {"tags": ("sea",)}


def test_builtin_reads_the_generated_csv(tmp_path: Path) -> None:
    data = DataConfig(format="builtin", builtin="multioutput")
    result = read_samples(data, {"count": HeadConfig(weight=2.0), "digits": HeadConfig()}, tmp_path)
    assert result.format == "builtin"
    assert len(result.samples) == 2000 and result.problems == []
    assert result.heads["digits"].kind == "multilabel" and result.heads["digits"].separator == " "
    assert result.heads["count"].kind == "multiclass" and result.heads["count"].weight == 2.0
    assert set(result.heads) == {"count", "digits"}  # configuring heads selects them
    first = result.samples[0]
    assert first.path.is_file() and first.where == "labels.csv:2"
    assert len(first.labels["digits"]) == len(set(first.labels["digits"])) >= 1
    assert int(first.labels["count"]) >= len(first.labels["digits"])
    with pytest.raises(ValueError, match="no head 'colour'"):
        read_samples(data, {"colour": HeadConfig()}, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("explicit_folders", [True, False])
def test_real_miml_scenes_csv(explicit_folders: bool) -> None:
    root = SHARED_DATA / "miml-scenes"
    if not (root / "train.csv").is_file():
        pytest.skip(f"real data not present at {root}")
    images = [str(root / "train"), str(root / "test")] if explicit_folders else []
    result = read_samples(DataConfig(labels=str(root / "train.csv"), images=images), {})
    assert "2,000 rows" in result.description
    assert len(result.samples) == 1500
    missing = [p for p in result.problems if p.kind == "missing_file"]
    assert len(missing) == 500 == len(result.problems)
    assert result.heads["tags"].columns == ["desert", "mountain", "sea", "sunset", "trees"]
    splits = [s.split for s in result.samples]
    assert (splits.count("train"), splits.count("test")) == (1400, 100)
    assert all(s.path.suffix == ".jpg" for s in result.samples)


def test_an_empty_class_folder_is_named_not_dropped_silently(tmp_path: Path) -> None:
    root = tmp_path / "pets"
    _image(root / "cat" / "a.png")
    (root / "dog").mkdir()
    (root / "dog" / "notes.txt").write_text("no images here")
    result = read_samples(DataConfig(images=[str(root)]), {})
    assert [s.labels["label"] for s in result.samples] == ["cat"]
    (empty,) = result.problems
    assert empty.kind == "empty_class" and empty.severity == "warning"
    assert empty.path == root / "dog" and "'dog' holds no images" in empty.message
