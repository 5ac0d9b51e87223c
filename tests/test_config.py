from pathlib import Path

import pytest

from yolo_tsd.config import TSDConfig, default_yaml, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_cfg_file_is_the_generated_defaults():
    assert (ROOT / "cfg" / "tsd.yaml").read_text() == default_yaml(), "regenerate: python -m yolo_tsd.config"
    assert TSDConfig.load(ROOT / "cfg" / "tsd.yaml") == TSDConfig()


def test_every_key_has_a_comment():
    lines = [line for line in default_yaml().splitlines() if not line.startswith("#")]
    assert len(lines) == len(TSDConfig().to_dict())
    assert all(" # " in line and len(line.split(" # ")[1]) > 10 for line in lines)


def test_overrides_apply_and_convert():
    cfg = TSDConfig.load(None, {"lambda_feat": 2, "split": "binary"})
    assert cfg.lambda_feat == 2.0 and isinstance(cfg.lambda_feat, float) and cfg.split == "binary"


def test_yaml_then_overrides(tmp_path):
    f = tmp_path / "t.yaml"
    f.write_text("lambda_cls: 0.5\nweak_mode: abs\n")
    cfg = TSDConfig.load(f, {"lambda_cls": 0.25})
    assert (cfg.lambda_cls, cfg.weak_mode) == (0.25, "abs")


@pytest.mark.parametrize(
    "values, match",
    [
        ({"lambda_fet": 1.0}, "Unknown TSD setting.*lambda_fet"),
        ({"lambda_feat": -1.0}, "lambda_feat=-1.0.*out of range"),
        ({"top_frac": 1.5}, "top_frac=1.5.*out of range"),
        ({"temperature": 0}, "temperature=0.*out of range"),
        ({"split": "four"}, "split=four.*three, binary"),
        ({"weak_mode": None}, "weak_mode=None.*none/null.*diff, abs, off"),
        ({"continuous": "yes"}, "continuous.*True or False"),
        ({"w_high": "big"}, "w_high.*must be a finite number"),
        ({"lambda_feat": float("nan")}, "lambda_feat.*must be a finite number"),
        ({"untrusted_every": float("inf")}, "untrusted_every.*must be a finite number"),
        ({"untrusted_every": 2.5}, "untrusted_every.*whole number"),
        ({"untrusted_every": 0}, "untrusted_every=0.*out of range"),
    ],
)
def test_bad_settings_name_the_key(values, match):
    with pytest.raises(ValueError, match=match):
        TSDConfig.from_dict(values)


def test_missing_file_and_non_mapping(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        TSDConfig.load(tmp_path / "nope.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="mapping"):
        TSDConfig.load(bad)


def test_distils_only_with_a_positive_weight():
    assert TSDConfig().distils
    assert not TSDConfig(lambda_feat=0, lambda_cls=0, lambda_box=0).distils


def test_readme_has_the_generated_settings_table():
    assert markdown_table() in (ROOT / "README.md").read_text(), "paste yolo_tsd.config.markdown_table() into README"
    for name in TSDConfig().to_dict():
        assert f"| `{name}` |" in markdown_table(), name


def test_every_choice_survives_the_command_line_parser():
    """A choice like 'none' or 'true' would reach the settings as None or True from tsd_<key>=<choice>."""
    import dataclasses

    from ultralytics.cfg import parse_key_value_pair

    for f in dataclasses.fields(TSDConfig):
        for choice in f.metadata["choices"]:
            assert parse_key_value_pair(f"tsd_{f.name}={choice}")[1] == choice, (f.name, choice)
