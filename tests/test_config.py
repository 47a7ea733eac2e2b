import pytest

from pictag.config import ConfigError, load_config


def _write(tmp_path, text):
    path = tmp_path / "job.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_yaml_loads_into_dataclasses_with_paths_resolved(tmp_path):
    path = _write(
        tmp_path,
        """
data:
  images: photos
  labels: labels.csv
heads:
  tags: {kind: multilabel, separator: ","}
  brand: {min_count: 5}
  year: {bins: [2010], labels: [old, new]}
train: {epochs: 3, lr: 0.01}
""",
    )
    config = load_config(path)
    assert config.data.images == [str(tmp_path / "photos")]
    assert config.data.labels == str(tmp_path / "labels.csv")
    assert config.heads["tags"].kind == "multilabel"
    assert config.heads["tags"].separator == ","
    assert config.heads["brand"].min_count == 5
    assert config.heads["year"].bins == [2010.0]
    assert config.train.epochs == 3
    assert config.train.lr == 0.01


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"'train.learning_rate'"):
        load_config(_write(tmp_path, "train: {learning_rate: 0.1}"))
    with pytest.raises(ConfigError, match=r"'heads.tags.sep'"):
        load_config(_write(tmp_path, "heads: {tags: {sep: ','}}"))
    with pytest.raises(ConfigError, match="'trian'"):
        load_config(_write(tmp_path, "trian: {}"))


def test_wrong_types_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"train.epochs: expected int"):
        load_config(_write(tmp_path, "train: {epochs: ten}"))
    with pytest.raises(ConfigError, match=r"train.channels_last: expected bool"):
        load_config(_write(tmp_path, "train: {channels_last: 1}"))
    with pytest.raises(ConfigError, match=r"heads.year.bins: expected a list"):
        load_config(_write(tmp_path, "heads: {year: {bins: 2010}}"))


def test_choices_are_checked():
    with pytest.raises(ConfigError, match=r"train.optimizer: must be one of adamw, sgd"):
        load_config(overrides=["train.optimizer=lion"])
    with pytest.raises(ConfigError, match=r"heads.t.kind"):
        load_config(overrides=["heads.t.kind=regression"])
    with pytest.raises(ConfigError, match=r"columns.*multilabel"):
        load_config(overrides=["heads.t.columns=[a, b]"])


def test_set_overrides_parse_yaml_values(tmp_path):
    path = _write(tmp_path, "train: {epochs: 3}")
    config = load_config(path, ["train.epochs=7", "train.amp=off", "heads.tags=multilabel"])
    assert config.train.epochs == 7
    assert config.train.amp == "off"
    assert config.heads["tags"].kind == "multilabel"
    with pytest.raises(ConfigError, match="key=value"):
        load_config(path, ["train.epochs"])


def test_labels_given_as_numbers_become_strings():
    config = load_config(overrides=["heads.digit.labels=[0, 1, 2]"])
    assert config.heads["digit"].labels == ["0", "1", "2"]


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(_write(tmp_path, "data: [unclosed"))
    with pytest.raises(ConfigError, match="mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_values_are_applied_as_typed_before_set_overrides():
    config = load_config(
        overrides=["heads.age.bins=[18]"],
        values={"data.pattern": r"(?P<age>\d+)_", "heads.age.kind": "multiclass"},
    )
    assert config.data.pattern == r"(?P<age>\d+)_"
    assert config.heads["age"].bins == [18.0]
    config = load_config(overrides=["heads.tags=multilabel", "heads.tags.separator=','"])
    assert config.heads["tags"].separator == ","
