"""Tests for pictag.data.validate: each kind of bad input is found and named by its exact row."""

import csv
import io
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pictag.config import DataConfig, HeadConfig
from pictag.data.problems import Problem
from pictag.data.schema import Sample
from pictag.data.sources import SourceResult
from pictag.data.validate import (
    CheckReport,
    DataCheckError,
    apply_policy,
    check_data,
    format_report,
)

ANIMAL = {"animal": HeadConfig()}
TAGS = {"tags": HeadConfig(kind="multilabel")}


def _noise(path: Path, seed: int, size: tuple[int, int] = (8, 8), mode: str = "RGB") -> Path:
    """A small image with content unique to `seed`, so files never share bytes by accident."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).convert(mode).save(path)
    return path


def _rows(tmp_path: Path, labels: list, head: str = "animal") -> list[Sample]:
    """One good image per label, at rows labels.csv:2, :3, ..."""
    return [
        Sample(_noise(tmp_path / f"img{i}.png", seed=i), {head: label}, where=f"labels.csv:{i + 2}")
        for i, label in enumerate(labels)
    ]


def _source(samples: list[Sample], heads=None, problems=None) -> SourceResult:
    heads = ANIMAL if heads is None else heads
    return SourceResult(samples, heads, problems or [], "CSV labels.csv (test)", "csv")


def _check(samples, heads=None, *, problems=None, **data) -> CheckReport:
    data.setdefault("min_per_label", 1)
    source = _source(samples, heads, problems)
    return check_data(source, DataConfig(**data), workers=2, progress=False)


def _only(report: CheckReport, kind: str) -> Problem:
    found = [p for p in report.problems if p.kind == kind]
    assert len(found) == 1, report.problems
    return found[0]


def _balanced(tmp_path: Path) -> list[Sample]:
    return _rows(tmp_path, ["cat", "dog", "cat", "dog", "cat", "dog"])


# --- clean data --------------------------------------------------------------------------------


def test_every_pixel_mode_passes(tmp_path):
    rng = np.random.default_rng(0)
    files = {
        "grey.png": Image.fromarray(rng.integers(0, 256, (9, 7), dtype=np.uint8)),
        "palette.png": Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)).convert(
            "P"
        ),
        "alpha.png": Image.fromarray(rng.integers(0, 256, (9, 7, 4), dtype=np.uint8)),
        "cmyk.jpg": Image.frombytes("CMYK", (7, 9), rng.integers(0, 256, 252, np.uint8).tobytes()),
        "deep.png": Image.fromarray(rng.integers(0, 65535, (9, 7), dtype=np.uint16)),
        "photo.jpg": Image.fromarray(rng.integers(0, 256, (9, 7, 3), dtype=np.uint8)),
    }
    samples = []
    for i, (name, image) in enumerate(files.items()):
        image.save(tmp_path / name)
        samples.append(Sample(tmp_path / name, {"animal": "cat" if i % 2 else "dog"}, None, name))
    report = _check(samples)
    assert report.problems == []
    assert report.kept() == samples
    assert report.image_sizes == [(7, 9)] * len(files)
    assert format_report(report).endswith("OK: no problems")
    assert apply_policy(report, "strict", tmp_path) == samples


# --- files that cannot be used -----------------------------------------------------------------


def _truncated_jpeg(path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (24, 24, 3), np.uint8)).save(
        buffer, "JPEG"
    )
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


BAD_FILES = [
    ("zero.jpg", lambda p: p.write_bytes(b""), "unreadable", "empty (0 bytes)"),
    ("cut.jpg", _truncated_jpeg, "unreadable", "truncated"),
    ("notes.png", lambda p: p.write_text("not pixels at all\n" * 3), "unreadable", "not an image"),
    ("page.jpg", lambda p: p.write_text("<!DOCTYPE html><html>404</html>"), "unreadable", "HTML"),
    ("huge.png", lambda p: _noise(p, 99, size=(50, 50)), "too_large", "over the limit of 1,000"),
    ("gone.jpg", lambda p: None, "missing_file", "does not exist"),
]


@pytest.mark.parametrize(
    ("name", "write", "kind", "phrase"), BAD_FILES, ids=[b[0] for b in BAD_FILES]
)
def test_bad_file_is_named_by_its_row(tmp_path, name, write, kind, phrase):
    samples = _balanced(tmp_path)
    bad = tmp_path / name
    write(bad)
    samples[2] = Sample(bad, {"animal": "cat"}, where="labels.csv:4")
    report = _check(samples, max_pixels=1000)
    problem = _only(report, kind)
    assert (problem.where, problem.path, problem.severity) == ("labels.csv:4", bad, "error")
    assert phrase in problem.message and str(bad) in problem.message
    assert problem.fix
    assert f"labels.csv:4: {problem.message} -> {problem.fix}" in format_report(report)
    assert report.kept() == samples[:2] + samples[3:]


def test_missing_file_is_found_without_decoding(tmp_path):
    samples = _balanced(tmp_path)
    samples[1] = Sample(tmp_path / "gone.jpg", {"animal": "dog"}, where="labels.csv:3")
    report = check_data(_source(samples), DataConfig(), decode=False, progress=False)
    assert [(p.kind, p.where) for p in report.problems] == [("missing_file", "labels.csv:3")]
    assert "not checked" in format_report(report)


def test_a_file_in_several_rows_is_reported_for_each(tmp_path):
    samples = _balanced(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    samples += [Sample(empty, {"animal": "cat"}, where=f"labels.csv:{n}") for n in (8, 9)]
    report = _check(samples)
    assert [p.where for p in report.errors()] == ["labels.csv:8", "labels.csv:9"]
    assert report.kept() == samples[:6]


# --- labels ------------------------------------------------------------------------------------


def test_unknown_label_names_head_label_and_row(tmp_path):
    samples = _rows(tmp_path, ["cat", "dog", "cow", "cat"])
    report = _check(samples, {"animal": HeadConfig(labels=["cat", "dog"])})
    problem = _only(report, "unknown_label")
    assert problem.where == "labels.csv:4"
    assert "'animal'" in problem.message and "'cow'" in problem.message
    assert "labels.csv:4: head 'animal'" in format_report(report)
    assert report.label_counts["animal"] == {"cat": 2, "dog": 1}


def test_non_numeric_value_of_a_binned_head_is_unknown_label(tmp_path):
    samples = _rows(tmp_path, ["2001", "2015", "soon", "2020"], head="year")
    report = _check(samples, {"year": HeadConfig(bins=[2010])})
    problem = _only(report, "unknown_label")
    assert problem.where == "labels.csv:4" and "'soon'" in problem.message
    assert report.label_counts["year"] == {"<=2009": 1, ">=2010": 2}


def test_row_with_no_labels_is_an_error(tmp_path):
    heads = {"animal": HeadConfig(), "tags": HeadConfig(kind="multilabel")}
    samples = [
        Sample(_noise(tmp_path / f"{i}.png", i), labels, where=f"labels.csv:{i + 2}")
        for i, labels in enumerate(
            [
                {"animal": "cat", "tags": ("indoor",)},
                {"animal": "dog", "tags": None},
                {"animal": None, "tags": None},
                {"animal": " ", "tags": ()},  # a blank class and no tags: an image with no tags
            ]
        )
    ]
    report = _check(samples, heads)
    assert [(p.where, p.severity) for p in report.problems] == [
        ("labels.csv:4", "error"),
        ("labels.csv:5", "warning"),
    ]
    assert {p.kind for p in report.problems} == {"no_labels"}
    assert "truly shows none" in report.problems[1].message
    assert report.missing_counts == {"animal": 2, "tags": 2}
    assert [s.where for s in report.kept()] == ["labels.csv:2", "labels.csv:3", "labels.csv:5"]


def test_multilabel_image_with_no_tags_but_another_head_labelled_is_fine(tmp_path):
    heads = {"animal": HeadConfig(), **TAGS}
    samples = [
        Sample(_noise(tmp_path / f"{i}.png", i), {"animal": a, "tags": t}, where=f"row{i}")
        for i, (a, t) in enumerate([("cat", ()), ("dog", ("x",)), ("cat", ("x",)), ("dog", ())])
    ]
    assert _check(samples, heads).problems == []


# --- duplicates --------------------------------------------------------------------------------


def test_same_path_with_different_labels_conflicts(tmp_path):
    samples = _balanced(tmp_path)
    samples.append(Sample(samples[0].path, {"animal": "dog"}, where="labels.csv:8"))
    report = _check(samples)
    errors = report.errors()
    assert [(p.kind, p.where) for p in errors] == [
        ("conflicting_duplicate", "labels.csv:2"),
        ("conflicting_duplicate", "labels.csv:8"),
    ]
    assert "animal=dog at labels.csv:8" in errors[0].message
    assert "animal=cat at labels.csv:2" in errors[1].message
    text = format_report(report)
    assert "labels.csv:2: img0.png is labelled animal=cat here" in text
    assert "labels.csv:8: img0.png is labelled animal=dog here" in text


def test_same_bytes_under_two_names_with_different_labels_conflicts(tmp_path):
    samples = _balanced(tmp_path)
    copy = tmp_path / "copy.png"
    copy.write_bytes(samples[1].path.read_bytes())
    samples.append(Sample(copy, {"animal": "cat"}, where="labels.csv:8"))
    report = _check(samples)
    first, second = report.errors()
    assert (first.where, second.where) == ("labels.csv:3", "labels.csv:8")
    assert {first.kind, second.kind} == {"conflicting_duplicate"}
    assert f"at labels.csv:8 (same bytes: {copy})" in first.message
    assert f"at labels.csv:3 (same bytes: {samples[1].path})" in second.message
    assert len(report.kept()) == 5


def test_same_image_with_same_labels_is_a_warning(tmp_path):
    samples = _balanced(tmp_path)
    copy = tmp_path / "copy.png"
    copy.write_bytes(samples[1].path.read_bytes())
    samples.append(Sample(copy, {"animal": "dog"}, where="labels.csv:8"))
    samples.append(Sample(samples[2].path, {"animal": "cat"}, where="labels.csv:9"))
    report = _check(samples)
    assert [(p.kind, p.where, p.severity) for p in report.problems] == [
        ("duplicate_image", "labels.csv:8", "warning"),
        ("duplicate_image", "labels.csv:9", "warning"),
    ]
    assert "same image as labels.csv:3 (same bytes" in report.problems[0].message
    assert len(report.kept()) == 8


def test_duplicates_by_content_need_decoding(tmp_path):
    samples = _balanced(tmp_path)
    copy = tmp_path / "copy.png"
    copy.write_bytes(samples[1].path.read_bytes())
    samples.append(Sample(copy, {"animal": "cat"}, where="labels.csv:8"))
    report = check_data(_source(samples), DataConfig(min_per_label=1), decode=False, progress=False)
    assert report.problems == []


# --- label counts ------------------------------------------------------------------------------


def test_rare_label_names_row_count_and_fixes(tmp_path):
    samples = _rows(tmp_path, ["cat", "dog", "cat", "dog", "emu"])
    report = _check(samples, min_per_label=2)
    problem = _only(report, "rare_label")
    assert (problem.where, problem.severity, problem.path) == (
        "labels.csv:6",
        "warning",
        samples[4].path,
    )
    assert "'emu' has 1 image," in problem.message and "min_per_label=2" in problem.message
    assert "heads.animal.min_count" in problem.fix and "heads.animal.rename" in problem.fix
    assert "labels.csv:6: head 'animal': label 'emu'" in format_report(report)
    assert report.kept() == samples  # a warning drops nothing


def test_rare_tag_of_multilabel_head(tmp_path):
    tags = [("a", "b"), ("a",), ("b",), ("a", "rare"), ("b",)]
    samples = _rows(tmp_path, tags, head="tags")
    problem = _only(_check(samples, TAGS, min_per_label=2), "rare_label")
    assert problem.where == "labels.csv:5" and "'rare'" in problem.message
    assert "min_count" not in problem.fix  # folding applies to multiclass heads only


def test_explicit_label_with_no_images_is_rare(tmp_path):
    samples = _balanced(tmp_path)
    report = _check(samples, {"animal": HeadConfig(labels=["cat", "dog", "owl"])})
    problem = _only(report, "rare_label")
    assert problem.where == "heads.animal" and "'owl' has 0 images" in problem.message


def test_single_class_head_is_an_error_no_row_can_fix(tmp_path):
    samples = _rows(tmp_path, ["cat", "cat", "cat"])
    report = _check(samples)
    problem = _only(report, "single_class")
    assert problem.where == "heads.animal" and problem.severity == "error"
    assert report.kept() == samples
    with pytest.raises(DataCheckError, match="single class"):
        apply_policy(report, "skip", tmp_path)
    assert not (tmp_path / "skipped.csv").exists()


# --- separators --------------------------------------------------------------------------------


def test_tag_lists_in_a_multiclass_head(tmp_path):
    labels = ["red", "red,blue", "blue", "green", "blue, green", "red", "green", "blue"]
    report = _check(_rows(tmp_path, labels, head="color"), {"color": HeadConfig()})
    problem = _only(report, "separator")
    assert (problem.where, problem.severity) == ("labels.csv:3", "warning")
    assert "2 of 8 values contain ','" in problem.message and "'red,blue'" in problem.message
    assert "heads.color.kind: multilabel" in problem.fix
    assert "heads.color.separator: ','" in problem.fix
    assert "labels.csv:3: head 'color'" in format_report(report)


def test_one_odd_value_is_not_a_separator_problem(tmp_path):
    labels = ["red", "red,blue", "blue", "green", "red", "blue", "green", "red", "blue", "green"]
    report = _check(_rows(tmp_path, labels, head="color"), {"color": HeadConfig()})
    assert [p.kind for p in report.problems] == []


def test_multilabel_separator_that_never_splits(tmp_path):
    tags = [("a;b",), ("b",), ("a;c",), ("c;b",), ("a",)]
    heads = {"tags": HeadConfig(kind="multilabel", separator=",")}
    report = _check(_rows(tmp_path, tags, head="tags"), heads)
    problem = _only(report, "separator")
    assert problem.where == "labels.csv:2"
    assert "no value splits into several tags on ','" in problem.message
    assert "heads.tags.separator: ';'" in problem.fix
    # the same values split by the right separator are fine
    split = [tuple(t[0].split(";")) for t in tags]
    heads = {"tags": HeadConfig(kind="multilabel", separator=";")}
    assert _check(_rows(tmp_path, split, head="tags"), heads).problems == []


# --- policies ----------------------------------------------------------------------------------


def _mixed(tmp_path: Path) -> tuple[SourceResult, list[Sample]]:
    """Six good rows, two bad ones (empty file, unknown label), one the reader already dropped."""
    samples = _balanced(tmp_path)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    samples.insert(1, Sample(empty, {"animal": "cat"}, where="labels.csv:20"))
    samples.insert(4, Sample(_noise(tmp_path / "cow.png", 77), {"animal": "cow"}, None, "x.csv:5"))
    dropped = Problem("bad_row", "labels.csv:30", "3 cells, expected 2", "fix the row")
    heads = {"animal": HeadConfig(labels=["cat", "dog"])}
    return SourceResult(samples, heads, [dropped], "test", "csv"), samples


def test_strict_raises_with_the_report(tmp_path):
    source, _ = _mixed(tmp_path)
    report = check_data(source, DataConfig(), progress=False)
    with pytest.raises(DataCheckError) as info:
        apply_policy(report, "strict", tmp_path)
    text = str(info.value)
    assert text == format_report(report)
    for where in ("labels.csv:20", "x.csv:5", "labels.csv:30"):
        assert f"\n    {where}: " in text
    assert text.endswith("3 errors, 0 warnings")
    assert not (tmp_path / "skipped.csv").exists()


def test_skip_lists_exactly_the_bad_rows_and_keeps_the_rest(tmp_path, caplog):
    source, samples = _mixed(tmp_path)
    report = check_data(source, DataConfig(), progress=False)
    with caplog.at_level(logging.WARNING):
        kept = apply_policy(report, "skip", tmp_path / "run")
    assert kept == [s for s in samples if s.where not in ("labels.csv:20", "x.csv:5")]
    with open(tmp_path / "run" / "skipped.csv", newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    assert [(r["where"], r["kind"]) for r in rows] == [
        ("labels.csv:20", "unreadable"),
        ("x.csv:5", "unknown_label"),
        ("labels.csv:30", "bad_row"),
    ]
    assert rows[0]["path"] == str(tmp_path / "empty.jpg") and rows[0]["fix"]
    assert "dropped 3 of 9 rows with errors (2 samples" in caplog.text
    assert "skipped.csv" in caplog.text


def test_skip_without_a_folder_writes_no_file(tmp_path, monkeypatch, caplog):
    source, _ = _mixed(tmp_path)
    report = check_data(source, DataConfig(), progress=False)
    monkeypatch.chdir(tmp_path)
    kept = apply_policy(report, "skip", None)
    assert len(kept) == 6
    assert not (tmp_path / "skipped.csv").exists()
    assert "dropped 3 of 9 rows with errors (2 samples" in caplog.text


def test_reader_error_on_a_sample_row_drops_it(tmp_path):
    samples = _balanced(tmp_path)
    problem = Problem("bad_row", "labels.csv:3", "odd cell", "fix it")
    report = _check(samples, problems=[problem])
    assert report.problems == [problem]
    assert report.kept() == samples[:1] + samples[2:]


def test_warnings_only_pass_strict(tmp_path):
    samples = _rows(tmp_path, ["cat", "dog", "cat", "dog", "emu"])
    report = _check(samples, min_per_label=2)
    assert apply_policy(report, "strict", tmp_path) == samples
    assert format_report(report).endswith("0 errors, 1 warning")


def test_unknown_policy_is_rejected(tmp_path):
    report = _check(_balanced(tmp_path))
    with pytest.raises(ValueError, match=r"data\.policy"):
        apply_policy(report, "lenient", tmp_path)


def test_skip_with_nothing_left_raises(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    samples = [Sample(empty, {"tags": ("a",)}, where="r1"), Sample(empty, {"tags": ("b",)}, "")]
    report = _check(samples, TAGS)
    with pytest.raises(DataCheckError, match="No samples are left"):
        apply_policy(report, "skip", tmp_path)


def test_no_samples_is_an_error():
    report = check_data(_source([]), DataConfig(), progress=False)
    assert [p.kind for p in report.errors()] == ["no_samples"]


# --- the text report ---------------------------------------------------------------------------


def test_report_summarises_images_heads_and_problems(tmp_path):
    labels = [f"c{i:02d}" for i in range(20) for _ in range(i + 1)] + [None]
    samples = _rows(tmp_path, labels)
    samples = [
        Sample(s.path, s.labels, "train" if i % 4 else "val", s.where)
        for i, s in enumerate(samples)
    ]
    for n in range(12):
        samples.append(Sample(tmp_path / f"lost{n}.jpg", {"animal": "c19"}, "val", f"l.csv:{n}"))
    samples[0] = Sample(
        _noise(tmp_path / "wide.png", 500, size=(30, 5)), {"animal": "c00"}, "val", "w"
    )
    report = _check(samples, max_pixels=10**6)
    text = format_report(report, max_per_kind=3)
    assert text.startswith("Data: CSV labels.csv (test)")
    assert "223 rows, 223 distinct files, 13 rows with errors" in text
    assert "train 158 (1 with errors), val 65 (12 with errors)" in text
    assert "smallest 8x8, largest 30x5" in text
    assert "animal: multiclass, 20 labels, 1 missing" in text
    lines = text.splitlines()
    shown = [line.split()[0] for line in lines if line.startswith("    c")]
    assert shown[:10] == [f"c{i:02d}" for i in range(19, 9, -1)]  # most frequent first
    assert shown[10:] == ["c04", "c03", "c02", "c01", "c00"]  # then the rarest
    assert "    ... 5 more labels ..." in text
    assert "  missing_file: 12 errors" in text
    assert "    l.csv:2: " in text and "l.csv:3:" not in text
    assert "    ... and 9 more" in text
    assert "  no_labels: 1 error\n    labels.csv:212: img210.png has no label" in text
    assert lines[-1] == "13 errors, 0 warnings"


def test_skip_counts_rows_that_never_became_samples(tmp_path, caplog):
    samples = _rows(tmp_path, ["cat", "dog", "cat", "dog"])
    missing = [
        Problem("missing_file", f"labels.csv:{row}", f"image {row}.png not found", "fix the row")
        for row in (7, 8, 9)
    ]
    report = _check(samples, problems=missing)
    with caplog.at_level(logging.WARNING):
        kept = apply_policy(report, "skip", tmp_path)
    assert kept == samples
    # 3 of 7 rows had errors, though every sample that was read is kept.
    assert "dropped 3 of 7 rows with errors (0 samples" in caplog.text
    assert "3 rows that gave no sample" in caplog.text
