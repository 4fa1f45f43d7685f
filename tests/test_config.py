from __future__ import annotations

import pytest
import yaml

from agegender.config import (
    AGE_HEADS,
    BOUNDS,
    CHOICES,
    LENGTHS,
    OPTIMIZERS,
    SCHEDULERS,
    ConfigError,
    DataConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_config,
    parse_override,
    save_config,
)


def test_defaults_without_file_or_overrides():
    assert load_config() == RunConfig()


def test_yaml_file_is_loaded(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  image_size: 32\n  limit: 100\nmodel:\n  widths: [8, 16]\ntrain:\n  lr: 0.01\n")
    config = load_config(path)
    assert config.data.image_size == 32
    assert config.data.limit == 100
    assert config.model.widths == (8, 16)
    assert config.train.lr == 0.01
    assert config.train.epochs == RunConfig().train.epochs  # untouched keys keep defaults


def test_overrides_apply_after_the_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 5\n  lr: 0.01\n")
    config = load_config(path, ["train.epochs=7", "model.name=custom", "data.seed=3"])
    assert (config.train.epochs, config.train.lr, config.data.seed) == (7, 0.01, 3)


def test_override_values_are_typed():
    config = apply_overrides(
        RunConfig(), ["train.lr=1e-3", "train.channels_last=false", "data.limit=", "data.val_fraction=0.25"]
    )
    assert config.train.lr == 0.001 and isinstance(config.train.lr, float)
    assert config.train.channels_last is False
    assert config.data.limit is None
    assert config.data.val_fraction == 0.25


@pytest.mark.parametrize(("text", "expected"), [("1e-3", 1e-3), ("1E-05", 1e-5), ("+2.5e-2", 0.025), (str(1e-05), 1e-05)])
def test_exponent_notation_is_a_number(text, expected):
    # PyYAML (YAML 1.1) reads "1e-3" as text, and the CLI formats --lr 0.00001 as "1e-05".
    assert apply_overrides(RunConfig(), [f"train.lr={text}"]).train.lr == expected


def test_negative_exponent_notation_is_read_as_a_number_then_bounded():
    with pytest.raises(ConfigError, match=r"^train\.lr: -250\.0 is outside \(0, 10\]$"):
        apply_overrides(RunConfig(), ["train.lr=-2.5e2"])


def test_exponent_notation_in_a_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  lr: 3e-4\n")
    assert load_config(path).train.lr == 3e-4


def test_exponent_text_is_not_an_integer():
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        apply_overrides(RunConfig(), ["train.epochs=1e3"])


def test_int_is_accepted_for_float_fields():
    config = apply_overrides(RunConfig(), ["train.lr=1"])
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)


def test_tuple_field_from_list():
    config = apply_overrides(RunConfig(), ["model.widths=[8, 16, 32]"])
    assert config.model.widths == (8, 16, 32)
    assert isinstance(config.model.widths, tuple)


def test_tuple_field_rejects_a_scalar():
    with pytest.raises(ConfigError, match="model.widths: expected a list"):
        apply_overrides(RunConfig(), ["model.widths=8"])


def test_tuple_field_checks_element_types():
    with pytest.raises(ConfigError, match="model.widths: expected an integer"):
        apply_overrides(RunConfig(), ["model.widths=[8, wide]"])


def test_unknown_key_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown key 'train.epoch'.*did you mean 'epochs'"):
        apply_overrides(RunConfig(), ["train.epoch=3"])


def test_unknown_section_suggests_the_closest():
    with pytest.raises(ConfigError, match=r"unknown config section 'trian'.*did you mean 'train'"):
        apply_overrides(RunConfig(), ["trian.epochs=3"])


def test_unknown_key_in_yaml_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("data:\n  imagesize: 32\n")
    with pytest.raises(ConfigError, match="did you mean 'image_size'"):
        load_config(path)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs=many", "train.epochs: expected an integer"),
        ("train.epochs=2.5", "train.epochs: expected an integer"),
        ("train.epochs=true", "train.epochs: expected an integer"),
        ("train.lr=fast", "train.lr: expected a number"),
        ("train.channels_last=1", "train.channels_last: expected true/false"),
        ("model.name=[a, b]", "model.name: expected text"),
    ],
)
def test_wrong_types_are_rejected(override, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(RunConfig(), [override])


@pytest.mark.parametrize("text", ["train.lr", "lr=0.1", "a.b.c=1"])
def test_malformed_overrides(text):
    with pytest.raises(ConfigError):
        parse_override(text)


def test_parse_override_splits_on_the_first_equals_only():
    assert parse_override("model.weights=a=b.pt") == ("model", "weights", "a=b.pt")


@pytest.mark.parametrize("code", ["__import__('os')", "__import__('os').system('echo pwned')", "open('/etc/passwd')"])
def test_values_are_never_evaluated(code):
    config = apply_overrides(RunConfig(), [f"data.path={code}"])  # a free-text key: kept as plain text
    assert config.data.path == code


def test_python_yaml_tag_in_override_is_a_config_error(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(ConfigError, match="cannot parse"):
        apply_overrides(RunConfig(), [f"train.optimizer=!!python/object/apply:os.system ['touch {marker}']"])
    assert not marker.exists()


def test_unparseable_yaml_value_is_a_config_error():
    # A raw yaml error would escape the CLI's user-error handling as a traceback.
    with pytest.raises(ConfigError, match="data.path"):
        apply_overrides(RunConfig(), ["data.path=[unclosed"])


def test_yaml_file_with_python_tag_is_refused(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(path)


def test_config_file_must_be_a_mapping(tmp_path):
    path = tmp_path / "list.yaml"
    path.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(path)


def test_section_must_be_a_mapping(tmp_path):
    path = tmp_path / "flat.yaml"
    path.write_text("train: 3\n")
    with pytest.raises(ConfigError, match="'train' must be a mapping"):
        load_config(path)


def test_missing_config_file_names_it(tmp_path):
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="nope.yaml"):
        load_config(path)


def test_empty_config_file_gives_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_config(path) == RunConfig()


def test_round_trip_through_dict_and_yaml(tmp_path):
    config = apply_overrides(
        RunConfig(), ["model.widths=[8,16]", "data.limit=50", "train.lr=0.003", "augment.hflip=0.0"]
    )
    plain = config_to_dict(config)
    assert plain["model"]["widths"] == [8, 16]  # tuples become lists
    assert config_from_dict(plain) == config
    path = tmp_path / "config.yaml"
    save_config(config, path)
    assert yaml.safe_load(path.read_text()) == plain
    assert load_config(path) == config


def test_robustness_augmentation_keys_parse_from_overrides():
    config = apply_overrides(
        RunConfig(),
        ["augment.grayscale=0.1", "augment.lowres=0.2", "augment.lowres_scale=[0.3,0.6]", "augment.jpeg=0.3",
         "augment.jpeg_quality=[40,80]", "augment.box_jitter=0.5", "augment.box_scale=0.1",
         "augment.box_shift=0.05", "augment.box_rotation=3"],
    )  # fmt: skip
    augment = config.augment
    assert (augment.grayscale, augment.lowres, augment.jpeg, augment.box_jitter) == (0.1, 0.2, 0.3, 0.5)
    assert augment.lowres_scale == (0.3, 0.6) and augment.jpeg_quality == (40, 80)
    assert (augment.box_scale, augment.box_shift, augment.box_rotation) == (0.1, 0.05, 3.0)
    assert config_from_dict(config_to_dict(config)) == config
    with pytest.raises(ConfigError, match="augment.jpeg_quality: expected an integer"):
        apply_overrides(RunConfig(), ["augment.jpeg_quality=[40.5,80]"])


def test_configs_are_frozen():
    with pytest.raises(Exception):
        RunConfig().train.epochs = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    ("limit", "val_fraction", "expected"),
    [(None, None, 0.1), (5000, None, 0.2), (None, 0.3, 0.3), (5000, 0.05, 0.05)],
)
def test_resolved_val_fraction(limit, val_fraction, expected):
    assert DataConfig(limit=limit, val_fraction=val_fraction).resolved_val_fraction() == expected


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.optimizer=adamx", "train.optimizer: unknown value 'adamx' (did you mean 'adam'?); choose one of adam, adamw, sgd"),
        ("train.scheduler=cosin", "train.scheduler: unknown value 'cosin' (did you mean 'cosine'?); choose one of plateau, step, cosine, none"),
        ("model.age_head=bin", "model.age_head: unknown value 'bin' (did you mean 'bins'?); choose one of bins, regression"),
        ("train.device=gpu", "train.device: unknown value 'gpu' (did you mean 'cpu'?); choose one of cpu, cuda, cuda:N"),
        ("train.device=cuda:x", "train.device: unknown value 'cuda:x' (did you mean 'cuda:N'?)"),
    ],
)
def test_enumerated_values_are_checked_at_load_time(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert str(caught.value).startswith(message)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12"])
def test_device_names_pass(device):
    assert load_config(None, [f"train.device={device}"]).train.device == device


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.image_size=8", "data.image_size: 8 is outside [16, 1024]"),
        ("data.image_size=40000", "data.image_size: 40000 is outside [16, 1024]"),
        ("model.widths=[1000000, 1000000]", "model.widths: 1000000 is outside [1, 1024]"),
        ("model.widths=[-5, 64]", "model.widths: -5 is outside [1, 1024]"),
        ("model.widths=[]", "model.widths: needs 1-8 items, got 0"),
        ("model.widths=[8, 8, 8, 8, 8, 8, 8, 8, 8]", "model.widths: needs 1-8 items, got 9"),
        ("train.lr=.nan", "train.lr: nan is outside (0, 10]"),
        ("train.lr=0", "train.lr: 0.0 is outside (0, 10]"),
        ("augment.hflip=2", "augment.hflip: 2.0 is outside [0, 1]"),
        ("data.val_fraction=1", "data.val_fraction: 1.0 is outside [0, 1)"),
        ("data.limit=1", "data.limit: 1 is outside [2, 1e+09]"),
        ("train.batch_size=0", "train.batch_size: 0 is outside [1, 65536]"),
    ],
)
def test_numbers_are_bounded_at_load_time(override, message):
    with pytest.raises(ConfigError) as caught:
        load_config(None, [override])
    assert str(caught.value) == message


def test_defaults_satisfy_every_bound_and_choice():
    assert config_from_dict(config_to_dict(RunConfig())) == RunConfig()  # re-checks every default value


def test_bounds_and_choices_name_real_fields():
    fields = set(flat_keys(config_to_dict(RunConfig())))
    assert set(BOUNDS) <= fields and set(CHOICES) <= fields and set(LENGTHS) <= fields


def flat_keys(mapping):
    return [f"{section}.{key}" for section, values in mapping.items() for key in values]


def test_choices_are_the_names_the_factories_build():
    import torch

    from agegender.models.heads import create_age_head
    from agegender.training.schedule import EpochScheduler, create_optimizer

    parameters = [torch.nn.Parameter(torch.zeros(1))]
    for name in OPTIMIZERS:
        optimizer = create_optimizer(parameters, TrainConfig(optimizer=name))
    for name in SCHEDULERS:
        EpochScheduler(optimizer, TrainConfig(scheduler=name), epochs=2)
    for name in AGE_HEADS:
        create_age_head(name, in_features=4, hidden=2, dropout=0.0)


def test_data_path_takes_one_folder_or_a_list(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("data:\n  path: /data/utkface\n")
    assert load_config(old).data.path == "/data/utkface"  # configs written before lists still load as they were
    assert load_config(old).data.folders() == ("/data/utkface",)
    several = load_config(None, ['data.path=["/a", "/b, with comma"]']).data
    assert several.path == ("/a", "/b, with comma") and several.folders() == ("/a", "/b, with comma")
    assert DataConfig().folders() == ()


def test_data_path_list_round_trips_through_a_saved_config(tmp_path):
    config = load_config(None, ["data.path=[/a, /b]"])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").data.folders() == ("/a", "/b")


def test_data_path_list_items_must_be_text():
    with pytest.raises(ConfigError, match="data.path: expected text"):
        load_config(None, ["data.path=[/a, [nested]]"])
