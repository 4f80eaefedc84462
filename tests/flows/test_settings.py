from pathlib import Path

import pytest

from flows.settings import Settings, load_settings, to_toml
from nightcast.errors import ConfigError


@pytest.fixture(autouse=True)
def _no_local_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a developer's ./nightcast.toml must not leak into these tests


def test_defaults_are_documented_and_valid():
    s = load_settings(config=None, environ={})
    assert s.features.horizons == [1, 2, 3, 4, 5]
    assert s.windows.test_days == 250
    assert s.paths.lake == Path("data/lake")
    assert s.paths.backtest == Path("outputs/backtest")
    for section in Settings.model_fields.values():
        for name, field in section.annotation.model_fields.items():
            assert field.description, f"{section.annotation.__name__}.{name} has no description"


def test_each_layer_overrides_only_what_it_sets(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text("[train]\nepochs = 3\nbatch_size = 64\npatience = 9\n[features]\nhorizons = [1, 5]\n")
    env = {
        "NIGHTCAST_TRAIN__EPOCHS": "7",
        "NIGHTCAST_TRAIN__BATCH_SIZE": "48",
        "NIGHTCAST_WINDOWS__LOOKBACK": "30",
        "NIGHTCAST_FEATURES__HORIZONS": "[2, 3]",
        "HOME": "/x",  # not ours: ignored
    }
    s = load_settings(cfg, environ=env, overrides={"train": {"batch_size": 32}})
    assert s.train.patience == 9  # file over default
    assert s.train.epochs == 7 and s.features.horizons == [2, 3]  # environment over file
    assert s.train.batch_size == 32  # flag over environment over file
    assert s.windows.lookback == 30  # environment over default
    assert s.train.learning_rate == Settings().train.learning_rate  # untouched by every layer


def test_config_file_lookup(tmp_path):
    (tmp_path / "nightcast.toml").write_text("[train]\nepochs = 4\n")
    named = tmp_path / "named.toml"
    named.write_text("[train]\nepochs = 5\n")
    assert load_settings(None, environ={}).train.epochs == 4  # ./nightcast.toml
    assert load_settings(None, environ={"NIGHTCAST_CONFIG": str(named)}).train.epochs == 5
    assert load_settings(tmp_path / "nightcast.toml", environ={"NIGHTCAST_CONFIG": str(named)}).train.epochs == 4


def test_environment_values_read_as_toml_when_they_parse():
    env = {
        "NIGHTCAST_SCHEDULE__NIGHTLY_CRON": '"15 19 * * 1-5"',  # a TOML string
        "NIGHTCAST_SCHEDULE__BACKTEST_CRON": "0 8 * * 6",  # not TOML: taken as it is
        "NIGHTCAST_SOURCE__TICKERS": "['nvda', \"ORCL\"]",
        "NIGHTCAST_MODEL__ATTENTION": "false",
        "NIGHTCAST_TRAIN__LEARNING_RATE": "2e-3",
    }
    s = load_settings(None, environ=env)
    assert (s.schedule.nightly_cron, s.schedule.backtest_cron) == ("15 19 * * 1-5", "0 8 * * 6")
    assert (s.source.tickers, s.model.attention, s.train.learning_rate) == (["NVDA", "ORCL"], False, 2e-3)


def test_data_dir_variable_is_short_for_paths_data_dir():
    assert load_settings(None, environ={"NIGHTCAST_DATA_DIR": "/srv/d"}).paths.lake == Path("/srv/d/lake")
    both = {"NIGHTCAST_DATA_DIR": "/srv/d", "NIGHTCAST_PATHS__DATA_DIR": "/srv/e"}
    assert load_settings(None, environ=both).paths.data_dir == Path("/srv/e")


def test_constructing_settings_ignores_the_environment(monkeypatch):
    monkeypatch.setenv("NIGHTCAST_TRAIN__EPOCHS", "2")
    assert Settings().train.epochs == 30
    assert load_settings(None).train.epochs == 2  # the process environment by default


def test_unknown_keys_are_rejected(tmp_path):
    cfg = tmp_path / "n.toml"
    cfg.write_text("[train]\nepochs = 3\nepoch = 4\n")
    with pytest.raises(ConfigError, match=r"setting train\.epoch: unknown setting"):
        load_settings(cfg, environ={})
    cfg.write_text("[trian]\nepochs = 3\n")
    with pytest.raises(ConfigError, match=r"setting trian: unknown setting"):
        load_settings(cfg, environ={})
    with pytest.raises(ConfigError, match="environment variable NIGHTCAST_TRIAN__EPOCHS: expected"):
        load_settings(None, environ={"NIGHTCAST_TRIAN__EPOCHS": "3"})
    with pytest.raises(ConfigError, match="environment variable NIGHTCAST_TRAIN: expected"):
        load_settings(None, environ={"NIGHTCAST_TRAIN": "3"})
    with pytest.raises(
        ConfigError, match=r"setting train\.epoch: unknown setting, got 3; did you mean train\.epochs\?$"
    ):
        load_settings(None, environ={"NIGHTCAST_TRAIN__EPOCH": "3"})


@pytest.mark.parametrize(
    "toml, hint",
    [
        ("[train]\nretrain_on_new_data = true", "; renamed train.retrain_on_revision in 0.2"),  # an old config
        ("[model]\nbidirectionl = true", "; did you mean model.bidirectional?"),
        ("[train]\nhorizons = [1]", "; it is features.horizons"),  # the right key in the wrong section
        ("[trian]\nepochs = 1", "; did you mean train?"),
        ("[train]\nzzz = 1", ", got 1\n"),  # nothing close: no guess
    ],
)
def test_an_unknown_key_says_what_it_may_be(tmp_path, toml, hint):
    cfg = tmp_path / "n.toml"
    cfg.write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, environ={})
    assert hint in str(err.value) + "\n"


def test_bad_values_name_setting_value_and_where_from(tmp_path):
    # one bad setting, one line (README: errors you can fix print one line); several, a line each under a heading
    with pytest.raises(
        ConfigError, match=r"^[^\n]*\(NIGHTCAST_\* environment or flags\): setting train\.epochs: .*'many'$"
    ):
        load_settings(None, environ={"NIGHTCAST_TRAIN__EPOCHS": "many"})
    with pytest.raises(ConfigError, match=r"flags\):\n  setting train\.epochs: .*\n  setting train\.batch_size: "):
        load_settings(None, environ={"NIGHTCAST_TRAIN__EPOCHS": "many", "NIGHTCAST_TRAIN__BATCH_SIZE": "x"})
    with pytest.raises(ConfigError, match=r"setting features\.horizons: Input should be a valid list, got '1,5'"):
        load_settings(None, environ={"NIGHTCAST_FEATURES__HORIZONS": "1,5"})  # a TOML list is [1, 5]
    with pytest.raises(ConfigError, match="source.path"):
        load_settings(None, environ={}, overrides={"source": {"kind": "file"}})
    cfg = tmp_path / "n.toml"
    cfg.write_text("[train]\nepochs = -1\n")
    with pytest.raises(ConfigError, match=rf"(?s)config file {cfg}, .*setting train\.epochs: .*got -1"):
        load_settings(cfg, environ={})
    # a backtest span in the wrong order is known without data: refused with the settings, before a run starts
    with pytest.raises(ConfigError, match=r"backtest\.test_start 2014-12-01 is after backtest\.test_end 2014-06-01"):
        load_settings(None, environ={}, overrides={"backtest": {"test_start": "2014-12-01", "test_end": "2014-06-01"}})


def test_unreadable_config_file_is_one_line_naming_it(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\n")
    with pytest.raises(ConfigError, match=rf"^config file {bad} is not valid TOML: [^\n]*$"):
        load_settings(bad, environ={})
    with pytest.raises(ConfigError, match=rf"^config file not found: {tmp_path / 'gone.toml'}$"):
        load_settings(tmp_path / "gone.toml", environ={})
    with pytest.raises(ConfigError, match="config file not found: gone.toml"):
        load_settings(None, environ={"NIGHTCAST_CONFIG": "gone.toml"})


def test_printed_toml_reads_back_to_the_same_settings(tmp_path):
    s = load_settings(None, environ={}, overrides={"source": {"tickers": ["A", "B"]}, "train": {"epochs": 4}})
    cfg = tmp_path / "round.toml"
    cfg.write_text(to_toml(s))
    assert load_settings(cfg, environ={}) == s


def test_a_value_our_rule_refuses_is_named_once():
    """A new user's review: "Value error, must be ... got [0, 5], got [0, 5]"."""
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={}, overrides={"features": {"horizons": [0, 5]}})
    assert str(err.value).endswith(
        "setting features.horizons: must be a non-empty list of positive integers, got [0, 5]"
    )


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        ({"publish": {"formats": []}}, "setting publish.formats: List should have at least 1 item"),
        ({"features": {"macd": [26, 12, 9]}}, "setting features.macd: MACD spans (fast, slow, signal) must be"),
        ({"features": {"macd": [12, 26, 0]}}, "with fast < slow, not [12, 26, 0]"),
        ({"train": {"epochs": True}}, "setting train.epochs: expected a number, got True"),  # was 1 epoch
        ({"train": {"epochs": "5"}}, "setting train.epochs: expected a number, got '5'"),
        ({"backtest": {"cost_bps": "5"}}, "setting backtest.cost_bps: expected a number, got '5'"),
    ],
)
def test_settings_a_hostile_user_slipped_through_are_refused(overrides, said):
    """No format wrote no forecasts file while the run said "25 forecasts"; a MACD slower than fast was built."""
    with pytest.raises(ConfigError) as err:
        load_settings(None, environ={}, overrides=overrides)
    assert said in str(err.value)
    # environment values are TOML: a number is one, `true` is not
    assert load_settings(None, environ={"NIGHTCAST_TRAIN__EPOCHS": "5"}).train.epochs == 5
    with pytest.raises(ConfigError, match="setting train.epochs: expected a number, got True"):
        load_settings(None, environ={"NIGHTCAST_TRAIN__EPOCHS": "true"})


def test_a_start_date_may_be_written_as_toml_writes_dates(tmp_path):
    """A verifier's finding: `start = 2024-01-02` (TOML's date) and NIGHTCAST_SOURCE__START=2024-01-02 were refused
    with "Input should be a valid string, got datetime.date(2024, 1, 2)"."""
    config = tmp_path / "nightcast.toml"
    config.write_text("[source]\nstart = 2024-01-02\n")
    assert load_settings(config, environ={}).source.start == "2024-01-02"
    assert load_settings(None, environ={"NIGHTCAST_SOURCE__START": "2024-01-02"}).source.start == "2024-01-02"
    # a date-time is its day (a review: it passed whole and failed the ingest's date parse mid-run)
    assert load_settings(None, environ={"NIGHTCAST_SOURCE__START": "2024-01-02T10:00:00"}).source.start == "2024-01-02"
    with pytest.raises(ConfigError, match=r"source.start: expected a date YYYY-MM-DD, got '01/02/2024'"):
        load_settings(None, environ={"NIGHTCAST_SOURCE__START": "01/02/2024"})


def test_runs_are_named_by_the_day_on_the_exchanges_clock():
    """The ingest subflow was named by the machine's UTC date: a New York run at 20:00 carried tomorrow's date."""
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from flows.settings import run_day

    east, west = "Pacific/Kiritimati", "Etc/GMT+12"  # UTC+14 and UTC-12: never the same date
    settings = Settings(schedule={"timezone": east})
    assert run_day(settings) == datetime.now(ZoneInfo(east)).date()
    assert run_day({"schedule": {"timezone": west}}) == datetime.now(ZoneInfo(west)).date() != run_day(settings)
    assert run_day(None) == datetime.now(ZoneInfo("America/New_York")).date()  # the default schedule's zone


def test_an_unknown_time_zone_is_refused_with_the_settings():
    with pytest.raises(ConfigError, match=r"schedule.timezone: unknown time zone 'Mars/Olympus'"):
        load_settings(None, environ={"NIGHTCAST_SCHEDULE__TIMEZONE": "Mars/Olympus"})
