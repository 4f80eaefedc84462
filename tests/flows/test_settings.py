from pathlib import Path

import pytest

from features.errors import ConfigError
from flows.settings import Settings, load_settings, to_toml


@pytest.fixture(autouse=True)
def _no_local_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a developer's ./nightcast.toml must not leak into these tests


def test_defaults_are_documented_and_valid():
    s = load_settings(config=None, environ={})
    assert s.features.horizons == [1, 2, 3, 4, 5]
    assert s.windows.test_days == 250
    assert s.paths.lake == Path("data/lake")
    for section in Settings.model_fields.values():
        for name, field in section.annotation.model_fields.items():
            assert field.description, f"{section.annotation.__name__}.{name} has no description"


def test_precedence_file_then_env_then_flags(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text(
        '[train]\nepochs = 3\nbatch_size = 64\n[features]\nhorizons = [1, 5]\n[source]\ntickers = ["NVDA"]\n'
    )
    env = {"NIGHTCAST_TRAIN__EPOCHS": "7", "NIGHTCAST_WINDOWS__LOOKBACK": "30", "HOME": "/x"}
    s = load_settings(cfg, environ=env, overrides={"train": {"batch_size": 32}})
    assert s.train.epochs == 7  # env beats file
    assert s.train.batch_size == 32  # flags beat file
    assert s.windows.lookback == 30
    assert s.features.horizons == [1, 5] and s.source.tickers == ["NVDA"]


def test_unknown_keys_are_rejected(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text("[train]\nepochs = 3\nepoch = 4\n")
    with pytest.raises(ConfigError, match=r"setting train\.epoch: unknown setting"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="NIGHTCAST_TRIAN__EPOCHS"):
        load_settings(None, environ={"NIGHTCAST_TRIAN__EPOCHS": "3"})


def test_bad_values_name_setting_and_value():
    with pytest.raises(ConfigError, match=r"setting train\.epochs: .*got 'many'"):
        load_settings(None, environ={"NIGHTCAST_TRAIN__EPOCHS": "many"})
    with pytest.raises(ConfigError, match="source.path"):
        load_settings(None, environ={}, overrides={"source": {"kind": "file"}})
    with pytest.raises(ConfigError, match="not valid TOML"):
        bad = Path("bad.toml")
        bad.write_text("[train\n")
        load_settings(bad, environ={})


def test_printed_toml_reads_back_to_the_same_settings(tmp_path):
    s = load_settings(None, environ={}, overrides={"source": {"tickers": ["A", "B"]}, "train": {"epochs": 4}})
    cfg = tmp_path / "round.toml"
    cfg.write_text(to_toml(s))
    assert load_settings(cfg, environ={}) == s
