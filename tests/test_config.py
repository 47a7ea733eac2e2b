import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
import yaml

from pictag.config import (
    Config,
    ConfigError,
    HeadConfig,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    load_config,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


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


def test_a_segmentation_heads_mask_folder_is_resolved_like_the_images(tmp_path):
    path = _write(
        tmp_path,
        """
data: {images: photos}
heads:
  pet: {kind: segmentation, masks: ../trimaps, mask_values: {1: pet, 3-4: ignore}}
  abs: {kind: segmentation, masks: /data/masks}
""",
    )
    config = load_config(path)
    assert config.heads["pet"].masks == str(tmp_path.parent / "trimaps")
    assert config.heads["abs"].masks == "/data/masks"
    assert config.heads["pet"].mask_values == {"1": "pet", "3-4": "ignore"}


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
    with pytest.raises(ConfigError, match=r"heads.t.threshold_by: must be one of f1, precision"):
        load_config(overrides=["heads.t.threshold_by=f2"])


def test_head_kinds_and_losses_are_left_to_the_heads_package():
    # pictag.heads owns the kinds and their rules; the config only carries the names.
    config = load_config(overrides=["heads.t.kind=regression", "heads.t.loss=huber"])
    assert (config.heads["t"].kind, config.heads["t"].loss) == ("regression", "huber")
    config = load_config(overrides=["heads.t.columns=[a, b]", "heads.t.positive=1"])
    assert config.heads["t"].columns == ["a", "b"]
    assert config.heads["t"].positive == "1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.lr=-1"], "train.lr: must be > 0; got -1.0"),
        (["train.epochs=0"], "train.epochs: must be >= 1; got 0"),
        (["train.batch_size=0"], "train.batch_size: must be >= 1; got 0"),
        (["train.momentum=1"], "train.momentum: must be >= 0 and < 1; got 1.0"),
        (["train.hflip=1.5"], "train.hflip: must be >= 0 and <= 1; got 1.5"),
        (["train.weight_decay=-0.1"], "train.weight_decay: must be >= 0; got -0.1"),
        (["train.workers=-1"], "train.workers: must be >= 0; got -1"),
        (["data.val_fraction=1"], "data.val_fraction: must be >= 0 and < 1; got 1.0"),
        (["data.seed=-1"], "data.seed: must be >= 0 and <= 4294967295; got -1"),
        (["data.max_pixels=0"], "data.max_pixels: must be >= 1; got 0"),
        (["model.image_size=8"], "model.image_size: must be >= 16; got 8"),
        (["model.drop_rate=1"], "model.drop_rate: must be >= 0 and < 1; got 1.0"),
        (["heads.t.weight=-1"], "heads.t.weight: must be >= 0; got -1.0"),
        (["heads.t.label_smoothing=1"], "heads.t.label_smoothing: must be >= 0 and < 1"),
        (["heads.t.threshold_target=0"], "heads.t.threshold_target: must be > 0 and <= 1"),
        (
            ["heads.t.threshold_by=fixed", "heads.t.threshold_target=1.5"],
            "heads.t.threshold_target: must be > 0 and <= 1; got 1.5",
        ),
        (["heads.t.min_count=-1"], "heads.t.min_count: must be >= 0; got -1"),
        (["train.lr=.inf"], "train.lr: must be a finite number; got inf"),
        (["heads.t.weight=.nan"], "heads.t.weight: must be a finite number"),
    ],
)
def test_ranges_are_checked_and_named(overrides, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(overrides=overrides)


def test_range_edges_and_unset_optionals_are_accepted():
    config = load_config(
        overrides=[
            "data.val_fraction=0",
            "train.hflip=1",
            "train.ema=0",
            "heads.t.threshold_target=1",
            "model.image_size=16",
        ]
    )
    assert config.data.val_fraction == 0.0
    assert config.heads["t"].threshold_target == 1.0
    assert load_config(overrides=["model.image_size=null"]).model.image_size is None


def test_cross_field_rules_are_checked():
    with pytest.raises(ConfigError, match=r"data.val_fraction \+ data.test_fraction: must be < 1"):
        load_config(overrides=["data.val_fraction=0.5", "data.test_fraction=0.5"])
    with pytest.raises(ConfigError, match=r"heads.age.bins: must be strictly ascending"):
        load_config(overrides=["heads.age.bins=[30, 18]"])
    with pytest.raises(ConfigError, match=r"at least one head needs a weight > 0"):
        load_config(overrides=["heads.a.weight=0", "heads.b.weight=0"])
    assert load_config(overrides=["heads.a.weight=0", "heads.b.weight=1"]).heads["a"].weight == 0


def test_floats_written_without_a_dot_are_floats(tmp_path):
    # YAML 1.1 (PyYAML) reads 5e-4 as the string '5e-4'.
    config = load_config(overrides=["train.weight_decay=5e-4", "heads.t.bins=[1e3]"])
    assert config.train.weight_decay == 0.0005
    assert config.heads["t"].bins == [1000.0]
    assert load_config(_write(tmp_path, "train: {lr: 3e-4}")).train.lr == 0.0003
    with pytest.raises(ConfigError, match=r"train.lr: expected float, got 'fast'"):
        load_config(overrides=["train.lr=fast"])


def test_a_bad_config_fails_at_once(tmp_path):
    path = _write(tmp_path, "heads: {tags: multilabel}\ntrain: {epochs: 50, lr: 0}\n")
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=r"train.lr: must be > 0"):
        load_config(path)
    assert time.perf_counter() - start < 2.0


def test_sections_stay_plain_dataclasses():
    head = HeadConfig(kind="multilabel")
    assert dataclasses.replace(head, weight=2.0).weight == 2.0
    head.hidden = 64
    assert dataclasses.asdict(head)["hidden"] == 64
    assert "positive" in [f.name for f in dataclasses.fields(HeadConfig)]
    config = config_from_dict(config_to_dict(Config(heads={"tags": head}, train=TrainConfig())))
    # Resolved once (defaults that follow other choices filled in), a config round-trips.
    assert config_from_dict(config_to_dict(config)) == config


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


def _cli_output(capsys, argv):
    from pictag.cli import main

    assert main(argv) == 0
    return capsys.readouterr().out


def test_config_command_prints_the_checked_config_as_yaml(capsys):
    assert yaml.safe_load(_cli_output(capsys, ["config"])) == config_to_dict(load_config())
    raw = yaml.safe_load(_cli_output(capsys, ["config", "--set", "train.amp=off"]))
    assert raw["train"]["amp"] == "off"  # quoted on output, so YAML 1.1 reads it back as text


def test_config_schema_has_types_defaults_choices_and_ranges(capsys):
    schema = json.loads(_cli_output(capsys, ["config", "--schema"]))
    sections = schema["properties"]
    lr = sections["train"]["properties"]["lr"]
    assert lr["type"] == "number"
    assert lr["default"] == 1e-3
    assert lr["exclusiveMinimum"] == 0
    assert lr["description"]
    fraction = sections["data"]["properties"]["val_fraction"]
    assert (fraction["minimum"], fraction["exclusiveMaximum"]) == (0, 1)
    assert sections["model"]["properties"]["image_size"]["type"] == ["integer", "null"]
    head, shorthand = sections["heads"]["additionalProperties"]["anyOf"]
    assert head["properties"]["threshold_by"]["enum"] == ["f1", "precision", "recall", "fixed"]
    assert "enum" not in head["properties"]["kind"]  # kinds are pictag.heads' business
    assert shorthand == {"type": "string", "description": shorthand["description"]}
    assert schema["additionalProperties"] is False
    for section in [head, *(sections[name] for name in ("data", "model", "train"))]:
        assert section["additionalProperties"] is False
        assert all(prop["description"] for prop in section["properties"].values())


def test_example_configs_load():
    for path in sorted(EXAMPLES.glob("*.yaml")):
        assert isinstance(load_config(path), Config), path.name


def test_example_configs_validate_against_the_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from pictag.config_schema import config_json_schema

    validator = jsonschema.Draft202012Validator(config_json_schema())
    examples = sorted(EXAMPLES.glob("*.yaml"))
    assert examples
    for path in examples:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert not list(validator.iter_errors(raw)), path.name
    for broken in ("train: {lr: 0}", "train: {learning_rate: 0.1}", "heads: {t: {sep: ','}}"):
        assert list(validator.iter_errors(yaml.safe_load(broken))), broken


def test_set_on_a_nested_head_key_keeps_the_sources_other_heads(tmp_path):
    # Issue 14, case 2: with no heads named, `--set heads.age.bins=...` changes the age head
    # the source names (data.all_heads), rather than selecting it alone.
    config = load_config(overrides=["heads.age.bins=[13, 20, 30]"])
    assert config.data.all_heads is True and config.heads["age"].bins == [13.0, 20.0, 30.0]
    # Naming a head (not a key inside one) still selects it.
    assert load_config(overrides=["heads.tags=multilabel"]).data.all_heads is False
    # A config file that names its heads selects them; a --set adds to them.
    path = tmp_path / "job.yaml"
    path.write_text("heads:\n  gender: multiclass\n", encoding="utf-8")
    config = load_config(path, overrides=["heads.age.bins=[13]"])
    assert config.data.all_heads is False and list(config.heads) == ["gender", "age"]
    # An explicit data.all_heads wins.
    assert not load_config(overrides=["data.all_heads=false", "heads.a.bins=[1]"]).data.all_heads


def test_defaults_follow_the_backbone_and_the_optimizer():
    # Issue 15, cases 2 and 3: a net trained from scratch gets from-scratch settings, each
    # optimizer its own weight decay; a value that is set stays as set.
    config = load_config()
    assert (config.model.pretrained, config.train.backbone_lr_scale) == ("offline", 0.1)
    assert config.train.weight_decay == 0.05 and config.train.nesterov is False
    scratch = load_config(overrides=["model.backbone=small_cnn"])
    assert (scratch.model.pretrained, scratch.train.backbone_lr_scale) == ("none", 1.0)
    assert load_config(overrides=["model.pretrained=none"]).train.backbone_lr_scale == 1.0
    assert load_config(overrides=["train.optimizer=sgd"]).train.weight_decay == 5e-4
    kept = load_config(overrides=["train.optimizer=sgd", "train.weight_decay=0.01"])
    assert kept.train.weight_decay == 0.01
    assert load_config(overrides=["train.backbone_lr_scale=0.5"]).train.backbone_lr_scale == 0.5


def test_crop_scale_is_milder_for_a_pretrained_net():
    assert load_config().train.crop_scale == 0.6
    assert load_config(overrides=["model.backbone=small_cnn"]).train.crop_scale == 0.25
    assert load_config(overrides=["model.pretrained=none"]).train.crop_scale == 0.25
    assert load_config(overrides=["train.crop_scale=0.4"]).train.crop_scale == 0.4
    with pytest.raises(ConfigError, match="crop_scale"):
        load_config(overrides=["train.crop_scale=0"])
