from pathlib import Path

import pytest
from helpers import logged_messages

from yolo_tsd.config import METHOD, REMOVED, USER, TSDConfig, default_yaml, markdown_table

ROOT = Path(__file__).resolve().parents[1]


def test_cfg_file_is_the_generated_defaults():
    assert (ROOT / "cfg" / "tsd.yaml").read_text() == default_yaml(), "regenerate: python -m yolo_tsd.config"
    assert TSDConfig.load(ROOT / "cfg" / "tsd.yaml") == TSDConfig()


def test_every_key_has_a_comment():
    lines = [line for line in default_yaml().splitlines() if line and not line.startswith("#")]
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


def test_readme_and_method_have_the_generated_settings_tables():
    assert markdown_table(USER) in (ROOT / "README.md").read_text(), "regenerate: python -m yolo_tsd.config"
    assert markdown_table(METHOD) in (ROOT / "docs" / "method.md").read_text(), "regenerate: python -m yolo_tsd.config"
    for name in TSDConfig().to_dict():
        assert f"| `{name}` |" in markdown_table(USER) + markdown_table(METHOD), name


def test_the_user_sees_a_handful_of_settings_first():
    user = TSDConfig.names(USER)
    assert 0 < len(user) <= 8 and TSDConfig.names()[: len(user)] == user  # first in the dataclass and the file
    assert {"lambda_feat", "lambda_cls", "lambda_box", "temperature", "teacher_half"} <= set(user)
    text = default_yaml()
    assert all(text.index(f"\n{u}:") < text.index(f"\n{m}:") for u in user for m in TSDConfig.names(METHOD))


def test_an_older_settings_file_with_removed_keys_loads_with_a_warning_naming_them(tmp_path):
    """Resume of a run written before 0.2 (its args.yaml holds every setting of its time) must still work."""
    old = tmp_path / "old.yaml"
    old.write_text(default_yaml() + "feat_norm: 'off'\nregion_norm: size\nwarmup_epochs: 0.0\ntrust_margin: 1.0\n")
    with logged_messages() as messages:
        cfg = TSDConfig.load(old)
    assert cfg == TSDConfig()
    warned = [m for m in messages if "removed" in m]
    assert len(warned) == 1 and all(k in warned[0] for k in ("feat_norm", "region_norm", "warmup_epochs"))
    assert "region_norm=size (now as region_norm=off)" in warned[0] and "feat_norm=off (" not in warned[0]
    assert set(REMOVED).isdisjoint(TSDConfig.names())
    with logged_messages() as messages:
        TSDConfig.load(None)
    assert not messages  # nothing to say about today's settings


def test_every_choice_survives_the_command_line_parser():
    """A choice like 'none' or 'true' would reach the settings as None or True from tsd_<key>=<choice>."""
    import dataclasses

    from ultralytics.cfg import parse_key_value_pair

    for f in dataclasses.fields(TSDConfig):
        for choice in f.metadata["choices"]:
            assert parse_key_value_pair(f"tsd_{f.name}={choice}")[1] == choice, (f.name, choice)
