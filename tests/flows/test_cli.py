import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest

from flows.cli import COMMANDS, SETTING_FLAGS, _overrides, build_parser, main
from flows.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]
COMMON = {"--config", "--verbose", "--help"}
SOURCE, RUNNER = {"--source", "--path", "--tickers"}, {"--runner", "--dask-address"}
FLAGS = {
    "run": COMMON | SOURCE | RUNNER | {"--out", "--asof"},
    "replay": COMMON | SOURCE | RUNNER | {"--out", "--start", "--end"},
    "record": COMMON | {"--out", "--asof", "--by-ticker", "--replay"},
    "ingest": COMMON | SOURCE | RUNNER | {"--lake"},
    "backtest": COMMON
    | SOURCE
    | RUNNER
    | {"--out", "--test-start", "--test-end", "--horizons", "--refit-every", "--cold-start"},
    "train": COMMON | SOURCE | RUNNER,
    "ui": COMMON,
    "serve": COMMON | SOURCE | {"--out", "--pool"},
    "config": COMMON | SOURCE | RUNNER | {"--out", "--changed"},
}
# flags that are arguments of one command, not settings
COMMAND_ARGUMENTS = {"help", "config", "verbose", "asof", "start", "end", "by_ticker", "replay", "pool", "changed"}


@pytest.fixture(autouse=True)
def _no_local_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a developer's ./nightcast.toml must not leak into these tests
    for name in [n for n in os.environ if n.startswith("NIGHTCAST_")]:
        monkeypatch.delenv(name)


def help_of(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


def settings_of(*argv: str):
    return load_settings(None, environ={}, overrides=_overrides(build_parser().parse_args(argv)))


def test_help_lists_every_command_with_its_summary(capsys):
    out = re.sub(r"\s", "", help_of(capsys))  # argparse wraps the summaries
    assert set(COMMANDS) == set(FLAGS)
    for command, (summary, _, _) in COMMANDS.items():
        assert re.sub(r"\s", "", command + summary) in out, command


@pytest.mark.parametrize("command", sorted(FLAGS))
def test_each_command_lists_exactly_its_own_flags(capsys, command):
    listed = re.findall(r"^ +(?:-\w, )?(--[a-z-]+)", help_of(capsys, command), re.MULTILINE)
    assert set(listed) == FLAGS[command]


def test_every_settings_flag_lands_in_the_settings(tmp_path):
    s = settings_of(
        "backtest",
        *("--source", "file", "--path", str(tmp_path / "p.csv"), "--tickers", "aaa", "BBB"),
        *("--out", str(tmp_path / "o"), "--runner", "dask", "--dask-address", "tcp://h:8786"),
        *("--test-start", "2014-07-01", "--test-end", "2014-12-31", "--horizons", "1,5"),
        *("--refit-every", "20", "--cold-start"),
    )
    assert (s.source.kind, s.source.path, s.source.tickers) == ("file", tmp_path / "p.csv", ["AAA", "BBB"])
    assert s.paths.out_dir == tmp_path / "o" and s.paths.backtest == tmp_path / "o" / "backtest"
    assert (s.runner.kind, s.runner.dask_address) == ("dask", "tcp://h:8786")
    assert (s.backtest.test_start, s.backtest.test_end) == (date(2014, 7, 1), date(2014, 12, 31))
    assert (s.features.horizons, s.backtest.refit_every, s.backtest.warm_start) == ([1, 5], 20, False)
    assert settings_of("ingest", "--lake", str(tmp_path / "lake")).paths.lake == tmp_path / "lake"
    defaults = settings_of("backtest")
    assert defaults == load_settings(None, environ={})  # a flag not given changes nothing
    assert defaults.backtest.warm_start is True


def test_every_flag_is_a_setting_or_a_command_argument():
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command").choices.values()
    dests = {action.dest for command in commands for action in command._actions}
    assert dests - COMMAND_ARGUMENTS == {dest for dest, _, _ in SETTING_FLAGS}


def test_flags_imply_the_kind_they_need(tmp_path, capsys):
    assert settings_of("config", "--path", str(tmp_path / "p.csv")).source.kind == "file"
    assert settings_of("config", "--path", str(tmp_path / "p.csv"), "--source", "file").source.kind == "file"
    assert settings_of("config", "--dask-address", "tcp://h:1").runner.kind == "dask"
    # a flag the chosen kind would ignore is an error, not silently dropped
    assert main(["config", "--path", str(tmp_path / "p.csv"), "--source", "sample"]) == 2
    assert capsys.readouterr().err == (
        "error: --path is only read with --source file, but --source is sample: drop one of them\n"
    )
    assert main(["config", "--dask-address", "tcp://h:1", "--runner", "threads"]) == 2
    assert "--dask-address is only read with --runner dask" in capsys.readouterr().err


def test_flags_override_environment_and_file(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[paths]\nout_dir = "from-file"\nlake_dir = "lake-from-file"\n[runner]\nkind = "dask"\n')
    monkeypatch.setenv("NIGHTCAST_PATHS__OUT_DIR", "from-env")
    assert main(["config", "--config", str(cfg), "--out", "from-flag"]) == 0
    out = capsys.readouterr().out
    assert 'out_dir = "from-flag"' in out and 'lake_dir = "lake-from-file"' in out and 'kind = "dask"' in out
    assert main(["config", "--config", str(cfg)]) == 0
    assert 'out_dir = "from-env"' in capsys.readouterr().out


def test_config_changed_prints_only_what_differs_from_the_defaults_and_reads_back(tmp_path, monkeypatch, capsys):
    """A nightcast.toml saved from `nightcast config` names every setting, so a newer nightcast's defaults never
    reach it (an upgrade tester's finding); `--changed` saves only the user's own choices."""
    from flows.settings import load_settings

    monkeypatch.setenv("NIGHTCAST_TRAIN__EPOCHS", "5")
    assert main(["config", "--changed", "--source", "yfinance", "--tickers", "AAPL", "MSFT"]) == 0
    out = capsys.readouterr().out
    assert out == '[source]\nkind = "yfinance"\ntickers = ["AAPL", "MSFT"]\n\n[train]\nepochs = 5\n\n'
    saved = tmp_path / "saved.toml"  # (not ./nightcast.toml: the next command would read it)
    saved.write_text(out)
    want = {"source": {"kind": "yfinance", "tickers": ["AAPL", "MSFT"]}, "train": {"epochs": 5}}
    assert load_settings(saved, environ={}) == load_settings(None, environ={}, overrides=want)
    monkeypatch.delenv("NIGHTCAST_TRAIN__EPOCHS")
    assert main(["config", "--changed"]) == 0
    assert capsys.readouterr().out == "# every setting at its default\n\n"


def test_config_output_is_toml_whatever_the_length_of_a_value(tmp_path, capsys):
    """Saved with `nightcast config > nightcast.toml`: a value longer than a console line (a deep --out path
    with spaces) stays on its line; rich's console wrapped it at 140 columns, which is not TOML."""
    import tomllib

    deep = str(tmp_path / ("a folder with spaces " * 8) / "out")
    assert main(["config", "--changed", "--out", deep]) == 0
    assert tomllib.loads(capsys.readouterr().out) == {"paths": {"out_dir": deep}}


class _Started(Exception):
    """Raised in place of starting Prefect: the command got past its checks."""


def test_a_night_before_the_data_is_refused_before_prefect_starts(tmp_path, monkeypatch, capsys):
    """`--asof` / `--end` before the first date of the run's data (the lake's and the source's): one line before
    Prefect's server starts (13 s on the sample, when the flow found it after the ingest)."""
    import json

    import flows.cli as cli

    def started(*_args, **_kwargs):
        raise _Started

    monkeypatch.setattr(cli, "_started", started)
    assert main(["run", "--asof", "1990-01-05"]) == 2
    assert capsys.readouterr().err == (
        "error: --asof 1990-01-05: no stored prices on or before it; the data starts on 1995-01-03\n"
    )
    assert main(["replay", "--start", "1990-01-01", "--end", "1990-02-01"]) == 2
    assert "error: --end 1990-02-01: no stored prices on or before it; the data starts on 1995-01-03" in (
        capsys.readouterr().err
    )
    assert main(["replay", "--start", "2016-01-04", "--end", "2016-02-01"]) == 2  # after the sample ends
    assert capsys.readouterr().err == (
        "error: no session with data between 2016-01-04 and 2016-02-01: the data ends on 2014-12-31\n"
    )
    with pytest.raises(_Started):  # a span that reaches into the data: past the checks
        main(["replay", "--start", "2014-12-01", "--end", "2015-01-30"])
    # the sample's first day: too little history, said now too (the lake holds nothing yet: the sample is all)
    assert main(["run", "--asof", "1995-01-03"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: --asof 1995-01-03: too little history: no ticker has validation.min_rows=300 rows by then (the "
        "most: 1); the first night that could have enough is "
    )
    with pytest.raises(_Started):  # a night with enough: past the checks
        main(["run", "--asof", "2014-06-02"])
    # a price file from 2020 over a lake that holds its ticker from 2019: the lake's first day counts, and only
    # for the run's tickers
    (tmp_path / "p.csv").write_text("date,ticker,close\n2020-01-02,AAA,10\n2020-01-03,AAA,11\n")
    lake = tmp_path / "data" / "lake"
    lake.mkdir(parents=True)
    held = {"AAA": {"first_date": "2019-01-02"}, "ZZZ": {"first_date": "1990-01-02"}}  # ZZZ: not this run's
    (lake / "manifest.json").write_text(json.dumps(held))
    with pytest.raises(_Started):
        main(["run", "--path", str(tmp_path / "p.csv"), "--asof", "2019-06-03"])
    assert main(["run", "--path", str(tmp_path / "p.csv"), "--asof", "2018-12-31"]) == 2
    assert "the data starts on 2019-01-02" in capsys.readouterr().err
    # yfinance: the ingest may fetch a new ticker's whole history, so only the flow can tell
    with pytest.raises(_Started):
        main(["run", "--source", "yfinance", "--tickers", "AAA", "NEW", "--asof", "2018-12-31"])


def test_bad_horizons_is_one_line_and_status_2(capsys):
    assert main(["backtest", "--horizons", "x"]) == 2
    err = capsys.readouterr().err
    assert err == "error: --horizons: expected comma-separated integers like 1,5, got 'x'\n"


def test_version(capsys):
    from nightcast.version import package_version

    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"nightcast {package_version()}"


def test_user_errors_print_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochz = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(cfg)],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "setting train.epochz: unknown setting" in proc.stderr


def test_missing_file_source_is_a_clear_error(tmp_path, capsys):
    assert main(["config", "--source", "file"]) == 2
    assert "source.path" in capsys.readouterr().err
    assert main(["config", "--path", str(tmp_path / "p.csv"), "--tickers", "AAA", "BBB"]) == 0
    out = capsys.readouterr().out
    assert 'kind = "file"' in out and 'tickers = ["AAA", "BBB"]' in out


PROBE = """
import os, sys
import flows.cli
imported = sorted(n for n in os.environ if n.startswith("PREFECT")), sorted(os.listdir(".")), "prefect" in sys.modules
code = flows.cli.main(sys.argv[1:])
import prefect.settings
print("PROBE", *imported, code, prefect.settings.get_current_settings().home)
"""


@pytest.mark.parametrize("argv", [["config"], ["run", "--path", "missing.csv"]], ids=["config", "run"])
def test_importing_the_cli_changes_nothing_and_commands_home_prefect_in_the_data_dir(tmp_path, argv):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT", "NIGHTCAST"))}
    env |= {"PYTHONPATH": str(ROOT), "NIGHTCAST_PATHS__DATA_DIR": "store"}
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    probe = proc.stdout.splitlines()[-1]
    assert probe.startswith("PROBE [] [] False ")  # on import: no PREFECT_* variable, no directory, no Prefect
    code, home = probe.split()[-2:]
    assert Path(home) == tmp_path / "store" / "prefect" and Path(home).is_dir()
    assert int(code) == (0 if argv == ["config"] else 2)  # run: the missing price file, after Prefect's set-up


def test_every_commands_help_has_examples_that_parse():
    """A new user's review: no --help had an example. Each one here is a command line the parser accepts."""
    import shlex

    from flows.cli import COMMANDS, EXAMPLES, build_parser

    assert set(EXAMPLES) == set(COMMANDS)
    for command, lines in EXAMPLES.items():
        assert "examples:\n" in build_parser()._subparsers._group_actions[0].choices[command].epilog
        for line in lines:
            words = [w for w in shlex.split(line.split("#")[0]) if "=" not in w or w.startswith("-")]
            assert words[0] == "nightcast", line
            build_parser().parse_args(words[1:])  # exits (SystemExit) on a flag that does not exist


def test_the_folds_table_fits_a_terminal_uncut():
    import polars as pl
    from rich.console import Console

    from flows.cli import _folds_table

    folds = pl.DataFrame(
        {
            "refit_date": ["2017-01-03", "2017-04-04"],
            "train_samples": [120000, 130000],
            "val_samples": [5000, 5000],
            "origins": [63, 63],
            "neural_fit_s": [123.4, 99.0],
            "attention_lstm_s": [61.2, 1.0],
            "ridge_s": [3.1, 2.0],
            "attention_lstm_epochs": [7, 8],
            "lstm_epochs": [9, None],
            "ensemble_epochs": [3, 4],
        }
    )
    console = Console(width=80, record=True)
    console.print(_folds_table(folds))
    text = console.export_text()
    assert "…" not in text and "2017-04-04" in text and "ensemble" in text and "ridge" not in text
    assert max(len(line.rstrip()) for line in text.splitlines()) <= 80


def test_an_unknown_flag_is_answered_with_that_commands_usage(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["run", "--bogus"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "usage: nightcast run " in err and "[--asof DATE]" in err
    assert err.strip().endswith("nightcast run: error: unrecognized arguments: --bogus")


def test_an_ingest_summary_shows_a_ticker_cell_literally(capsys):
    """A security review: a ticker cell "[/x]" of a price file was read as rich markup and crashed the summary
    (after the lake was written) with a traceback."""
    import polars as pl

    from features.prices.ingest import SUMMARY_SCHEMA, IngestReport
    from flows import cli

    row = {"ticker": "[/x]", "rows_added": 0, "rows_revised": 0, "rows_filled": 0, "first_date": None}
    row |= {"last_date": None, "behind": None, "repaired": 0, "status": "quarantined", "reason": "[ticker_symbol]"}
    cli._print_ingest(IngestReport(pl.DataFrame(schema=SUMMARY_SCHEMA), pl.DataFrame([row], schema=SUMMARY_SCHEMA)))
    out = capsys.readouterr().out
    assert "[/x]" in out and "[ticker_symbol]" in out
