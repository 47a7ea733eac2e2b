"""Tests for the CSV/TSV source (pictag.data.sources_csv, through read_samples): each quirk of
real label files on its own, on tiny files in tmp_path."""

from pathlib import Path

import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.sources import read_samples


def _image(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (2, 2), (200, 10, 10)).save(path)
    return path


def _csv(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def _read(labels: Path, heads: dict | None = None, **data) -> object:
    config = DataConfig(labels=str(labels), **data)
    return read_samples(config, {k: HeadConfig(**v) for k, v in (heads or {}).items()})


def _problems(result, kind: str) -> list:
    return [p for p in result.problems if p.kind == kind]


def test_bom_chinese_header_ids_without_extension_and_auto_tags(tmp_path: Path) -> None:
    for name in ("1.jpg", "2.jpg"):
        _image(tmp_path / name)
    labels = _csv(tmp_path / "labels.csv", "图片序号,sea,trees\n1,1,0\n2,1,1\n", "utf-8-sig")
    result = _read(labels)
    assert result.format == "csv"
    assert result.heads["tags"].kind == "multilabel"
    assert result.heads["tags"].columns == ["sea", "trees"]
    assert [s.path.name for s in result.samples] == ["1.jpg", "2.jpg"]
    assert [s.labels["tags"] for s in result.samples] == [("sea",), ("sea", "trees")]
    assert [s.where for s in result.samples] == ["labels.csv:2", "labels.csv:3"]
    assert "'图片序号'" in result.description and "2 images found" in result.description


def test_crlf_line_ends_and_missing_image_line_number(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "c.png")
    text = "image,label\r\na.png,cat\r\nb.png,dog\r\nc.png,dog\r\n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"label": {}})
    assert [s.labels["label"] for s in result.samples] == ["cat", "dog"]  # no stray '\r'
    (missing,) = _problems(result, "missing_file")
    assert missing.where == "labels.csv:3"
    assert missing.severity == "error"
    assert "'b.png'" in missing.message
    assert "data.images" in missing.fix and "image column" in missing.fix


def test_line_numbers_are_physical_lines_across_quoted_newlines(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    text = 'image,note,label\na.png,"two\nlines",cat\n\nmissing.png,x,dog\n'
    result = _read(_csv(tmp_path / "labels.csv", text), {"label": {}})
    assert result.samples[0].where == "labels.csv:2"
    assert _problems(result, "missing_file")[0].where == "labels.csv:5"


def test_quoted_field_with_comma_is_one_cell_and_sets_separator(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    text = 'image,tags\na.png,"cat, dog"\nb.png,bird\n'
    result = _read(_csv(tmp_path / "labels.csv", text), {"tags": {"kind": "multilabel"}})
    assert [s.labels["tags"] for s in result.samples] == [("cat", "dog"), ("bird",)]
    assert result.heads["tags"].separator == ","
    assert "split on ','" in result.description


def test_spaces_around_cells_are_stripped(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    text = "image , label \n  a.png ,  cat  \n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"label": {}})
    assert result.samples[0].path == tmp_path / "a.png"
    assert result.samples[0].labels == {"label": "cat"}


@pytest.mark.parametrize("name", ["labels.tsv", "labels.csv", "labels.txt"])
def test_tab_separated_by_extension_or_sniffed(tmp_path: Path, name: str) -> None:
    _image(tmp_path / "a b.png")
    text = "image\tlabel\ttags\na b.png\tcat\tx,y\n"
    heads = {"label": {}, "tags": {"kind": "multilabel"}}
    result = _read(_csv(tmp_path / name, text), heads)
    assert result.samples[0].path.name == "a b.png"
    assert result.samples[0].labels == {"label": "cat", "tags": ("x", "y")}


def test_exact_duplicate_rows_read_once_with_warning(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    text = "image,label\na.png,cat\na.png,cat\na.png,dog\n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"label": {}})
    # The conflicting row (same image, other label) is kept: the checks report conflicts.
    assert [(s.where, s.labels["label"]) for s in result.samples] == [
        ("labels.csv:2", "cat"),
        ("labels.csv:4", "dog"),
    ]
    (dupe,) = _problems(result, "duplicate_row")
    assert dupe.where == "labels.csv:3" and dupe.severity == "warning"
    assert "line 2" in dupe.message


def test_id_resolved_in_second_folder_gets_split_from_folder_name(tmp_path: Path) -> None:
    _image(tmp_path / "data" / "train" / "1.jpg")
    _image(tmp_path / "data" / "Validation" / "2.JPG")
    labels = _csv(tmp_path / "meta" / "labels.csv", "id,label\n1,a\n2,b\n")
    images = [str(tmp_path / "data" / "train"), str(tmp_path / "data" / "Validation")]
    result = _read(labels, {"label": {}}, images=images)
    assert result.problems == []
    assert [(s.path.name, s.split) for s in result.samples] == [
        ("1.jpg", "train"),
        ("2.JPG", "val"),
    ]


def test_default_roots_are_the_csv_folder_and_its_split_folders(tmp_path: Path) -> None:
    _image(tmp_path / "x.png")
    _image(tmp_path / "test" / "y.png")
    result = _read(_csv(tmp_path / "l.csv", "image,label\nx,a\ny,b\n"), {"label": {}})
    assert [(s.path.name, s.split) for s in result.samples] == [("x.png", None), ("y.png", "test")]


def test_a_tag_head_named_after_no_column_of_a_0_1_file_says_how_to_read_it(tmp_path):
    # The quick start's `--head tags:multilabel` on a file of 0/1 columns (miml-scenes' format).
    for name in ("1.jpg", "2.jpg"):
        _image(tmp_path / name)
    labels = _csv(tmp_path / "labels.csv", "image,sea,trees,desert\n1,1,0,0\n2,1,1,0\n")
    wanted = (
        r"has no column 'tags', but 0/1 columns.*sea, trees, desert.*leave out --head"
        r".*heads\.tags\.columns=\[sea,trees\]"
    )
    with pytest.raises(ValueError, match=wanted):
        _read(labels, {"tags": {"kind": "multilabel"}})
    # What the message suggests reads them.
    result = _read(labels, {"tags": {"kind": "multilabel", "columns": ["sea", "trees"]}})
    assert [sample.labels["tags"] for sample in result.samples] == [("sea",), ("sea", "trees")]
    # A tag-list column beside a 0/1 one: leaving out --head would not read them, so the
    # error lists the columns instead.
    mixed = _csv(tmp_path / "mixed.csv", "image,keywords,blurry\n1,sea sky,1\n2,trees,0\n")
    with pytest.raises(ValueError, match=r"column 'tags' is not in mixed\.csv; its columns are"):
        _read(mixed, {"tags": {"kind": "multilabel"}})
    # The image column need not come first.
    moved = _csv(tmp_path / "moved.csv", "sea,image,trees\n1,1,0\n1,2,1\n")
    with pytest.raises(ValueError, match=r"0/1 columns, one per tag \(sea, trees\)"):
        _read(moved, {"tags": {"kind": "multilabel"}}, image_column="image")


def test_a_0_1_column_that_is_never_1_is_named_in_a_warning(tmp_path: Path) -> None:
    for name in ("1.jpg", "2.jpg"):
        _image(tmp_path / name)
    labels = _csv(tmp_path / "labels.csv", "image,sea,trees\n1,1,0\n2,1,\n")
    result = _read(labels)
    [warning] = _problems(result, "empty_label")
    assert warning.severity == "warning" and warning.where == "labels.csv"
    assert "column 'trees' is never 1; the tag is left out" in warning.message


def test_a_header_without_rows_says_so(tmp_path: Path) -> None:
    labels = _csv(tmp_path / "labels.csv", "image,sea,trees\n")
    with pytest.raises(ValueError, match=r"labels\.csv has a header but no rows"):
        _read(labels)


def test_zero_one_column_groups(tmp_path: Path) -> None:
    for n in range(6):
        _image(tmp_path / f"{n}.png")
    text = (
        "image,cat,dog,bird\n"
        "0.png,1,0,0\n"
        "1.png,1.0,true,no\n"
        "2.png,yes,-1,FALSE\n"
        "3.png,,,\n"
        "4.png,0,0,0\n"
        "5.png,1,maybe,0\n"
    )
    heads = {"animals": {"kind": "multilabel", "columns": ["cat", "dog", "bird"]}}
    result = _read(_csv(tmp_path / "labels.csv", text), heads)
    got = {s.path.name: s.labels["animals"] for s in result.samples}
    assert got == {
        "0.png": ("cat",),
        "1.png": ("cat", "dog"),
        "2.png": ("cat",),
        "3.png": None,  # every cell empty: missing, not "no tags"
        "4.png": (),
    }
    (bad,) = _problems(result, "bad_row")
    assert bad.where == "labels.csv:7" and "'maybe'" in bad.message and "dog" in bad.message
    assert bad.path == tmp_path / "5.png"


def test_a_tag_head_on_one_0_1_column_is_the_tag_named_after_the_column(tmp_path: Path) -> None:
    # `--head sea:multilabel` on the scenes' 0/1 `sea` column: the tag "sea", not "0" and "1".
    for n in range(4):
        _image(tmp_path / f"{n}.png")
    text = "image,sea,tags\n0.png,1,a b\n1.png,0,b\n2.png,,a\n3.png,yes,1\n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"sea": {"kind": "multilabel"},
                   "tags": {"kind": "multilabel"}})  # fmt: skip
    got = {s.path.name: s.labels["sea"] for s in result.samples}
    assert got == {"0.png": ("sea",), "1.png": (), "2.png": None, "3.png": ("sea",)}
    assert "head 'sea': tag 'sea' where its 0/1 column is 1" in result.description
    # A tag-list column with a "1" among other tags stays a tag list.
    assert result.samples[3].labels["tags"] == ("1",)


@pytest.mark.parametrize(
    ("cell", "separator", "shown"),
    [
        ('"a,b"', ",", "','"),
        ("a;b", ";", "';'"),
        ("a|b", "|", "'|'"),
        ("a b", None, "spaces"),
    ],
)
def test_tag_separator_detection(tmp_path: Path, cell: str, separator, shown: str) -> None:
    _image(tmp_path / "1.png")
    _image(tmp_path / "2.png")
    text = f"image,tags\n1.png,{cell}\n2.png,c\n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"tags": {"kind": "multilabel"}})
    assert [s.labels["tags"] for s in result.samples] == [("a", "b"), ("c",)]
    assert result.heads["tags"].separator == separator
    assert f"split on {shown}" in result.description


@pytest.mark.parametrize(
    ("header", "row", "tags"),
    [
        ("image;tags", "{n}.png;a,b,c", ("a", "b", "c")),  # European Excel: ';' between cells
        ("image,tags", "{n}.png,a|b|c", ("a", "b", "c")),
        ("image|tags", "{n}.png|a;b", ("a", "b")),
    ],
)
def test_cell_delimiter_is_not_confused_with_tag_separators(
    tmp_path: Path, header: str, row: str, tags: tuple
) -> None:
    for n in range(12):
        _image(tmp_path / f"{n}.png")
    text = header + "\n" + "".join(row.format(n=n) + "\n" for n in range(12))
    result = _read(_csv(tmp_path / "labels.csv", text), {"tags": {"kind": "multilabel"}})
    assert len(result.samples) == 12
    assert all(s.labels["tags"] == tags for s in result.samples)


def test_configured_separator_is_used(tmp_path: Path) -> None:
    _image(tmp_path / "1.png")
    text = "image,tags\n1.png,red car/blue sky\n"
    heads = {"tags": {"kind": "multilabel", "separator": "/"}}
    result = _read(_csv(tmp_path / "labels.csv", text), heads)
    assert result.samples[0].labels["tags"] == ("red car", "blue sky")


def test_several_heads_empty_cells_and_image_column(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    text = "label,file,colour\ncat,a.png,\n"
    heads = {"animal": {"column": "label"}, "colour": {}}
    result = _read(_csv(tmp_path / "labels.csv", text), heads, image_column="file")
    assert result.samples[0].labels == {"animal": "cat", "colour": None}


@pytest.mark.parametrize(
    ("heads", "data", "named"),
    [
        ({"species": {}}, {}, "'species'"),
        ({"x": {"column": "Label"}}, {}, "'Label'"),
        ({"t": {"kind": "multilabel", "columns": ["cat", "cow"]}}, {}, "'cow'"),
        ({"label": {}}, {"image_column": "path"}, "'path'"),
        ({"label": {}}, {"split_column": "fold"}, "'fold'"),
    ],
)
def test_missing_column_is_an_error_listing_the_header(
    tmp_path: Path, heads: dict, data: dict, named: str
) -> None:
    labels = _csv(tmp_path / "labels.csv", "image,label,cat\na.png,x,1\n")
    with pytest.raises(ValueError, match=named) as info:
        _read(labels, heads, **data)
    assert "'image', 'label', 'cat'" in str(info.value)


def test_head_kind_must_fit_how_the_csv_gives_its_labels(tmp_path: Path) -> None:
    labels = _csv(tmp_path / "labels.csv", "image,label,cat\na.png,x,1\n")
    with pytest.raises(ValueError, match=r"heads\.t\.columns .* needs kind: multilabel"):
        _read(labels, {"t": {"kind": "multiclass", "columns": ["cat"]}})
    with pytest.raises(ValueError, match=r"heads\.label\.kind: must be one of .*'regression'"):
        _read(labels, {"label": {"kind": "regression"}})


def test_no_heads_and_text_columns_asks_for_heads(tmp_path: Path) -> None:
    labels = _csv(tmp_path / "labels.csv", "image,label\na.png,cat\n")
    with pytest.raises(ValueError, match="heads"):
        _read(labels)


def test_split_column(tmp_path: Path) -> None:
    for n in range(4):
        _image(tmp_path / f"{n}.png")
    text = "image,label,fold\n0.png,a,TRAIN\n1.png,a,Validation\n2.png,b,\n3.png,b,holdout\n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"label": {}}, split_column="fold")
    assert [s.split for s in result.samples] == ["train", "val", None]
    (bad,) = _problems(result, "bad_row")
    assert bad.where == "labels.csv:5" and "'holdout'" in bad.message


def test_row_with_wrong_cell_count_is_a_bad_row(tmp_path: Path) -> None:
    _image(tmp_path / "a.png")
    _image(tmp_path / "b.png")
    text = "image,tags\na.png,x\nb.png,x,y\n"
    result = _read(_csv(tmp_path / "labels.csv", text), {"tags": {"kind": "multilabel"}})
    assert len(result.samples) == 1
    (bad,) = _problems(result, "bad_row")
    assert bad.where == "labels.csv:3" and "quote" in bad.fix


def test_missing_or_non_utf8_label_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found"):
        _read(tmp_path / "nope.csv", {"label": {}})
    labels = _csv(tmp_path / "latin.csv", "image,label\na.png,caf\xe9\n", "latin-1")
    with pytest.raises(ValueError, match="UTF-8"):
        _read(labels, {"label": {}})


def test_a_looping_symlink_does_not_hide_the_folders_images(tmp_path: Path, caplog) -> None:
    good = [_image(tmp_path / "images" / f"{i}.png") for i in range(3)]
    (tmp_path / "images" / "loop.png").symlink_to(tmp_path / "images" / "loop.png")
    rows = "".join(f"images/{p.name},cat\n" for p in good)
    with caplog.at_level("WARNING"):
        result = _read(_csv(tmp_path / "labels.csv", "image,label\n" + rows), {"label": {}})
    assert sorted(s.path.name for s in result.samples) == ["0.png", "1.png", "2.png"]
    assert "loop.png" in caplog.text and "skipped" in caplog.text


@pytest.mark.parametrize("outside", ["../../secret.png", "{abs}"])
def test_image_paths_that_leave_the_image_folders_are_refused(tmp_path: Path, outside) -> None:
    secret = _image(tmp_path / "secret.png")
    _image(tmp_path / "data" / "images" / "ok.png")
    value = str(secret) if outside == "{abs}" else outside
    labels = _csv(tmp_path / "data" / "labels.csv", f"image,label\nok.png,a\n{value},b\n")
    roots = [str(tmp_path / "data" / "images")]
    result = _read(labels, {"label": {}}, images=roots)
    assert [s.path.name for s in result.samples] == ["ok.png"]
    [problem] = _problems(result, "outside_roots")
    assert problem.where == "labels.csv:3" and "allow_outside_roots" in problem.fix
    allowed = _read(labels, {"label": {}}, images=roots, allow_outside_roots=True)
    assert sorted(s.path.name for s in allowed.samples) == ["ok.png", "secret.png"]
