import subprocess
import sys

from flows.cli import build_parser, main


def help_of(capsys, *argv: str) -> str:
    try:
        build_parser().parse_args([*argv, "--help"])
    except SystemExit as exc:
        assert exc.code == 0
    return capsys.readouterr().out


def test_help_lists_every_command_with_its_summary(capsys):
    out = help_of(capsys)
    for command in ("run", "replay", "record", "ingest", "backtest", "train", "ui", "serve", "config"):
        assert f"\n    {command} " in out or f"\n    {command}\n" in out, command
    assert "NIGHTCAST_" in out


def test_each_command_lists_only_its_own_flags(capsys):
    run = help_of(capsys, "run")
    assert all(f in run for f in ("--config", "--source", "--path", "--tickers", "--out", "--asof", "--verbose"))
    assert "wide layout" in run  # --path explains both layouts
    ui = help_of(capsys, "ui")
    assert "--config" in ui and "--source" not in ui and "--out" not in ui
    record = help_of(capsys, "record")
    assert "--replay" in record and "--source" not in record
    assert "--lake" in help_of(capsys, "ingest") and "--lake" not in run


def test_version(capsys):
    from features.version import package_version

    try:
        build_parser().parse_args(["--version"])
    except SystemExit as exc:
        assert exc.code == 0
    assert capsys.readouterr().out.strip() == f"nightcast {package_version()}"


def test_user_errors_print_one_line_without_traceback(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[train]\nepochz = 1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.cli", "run", "--config", str(cfg)], capture_output=True, text=True, timeout=60
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
