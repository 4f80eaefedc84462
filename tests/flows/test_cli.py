import subprocess
import sys

from flows.cli import build_parser, main


def test_help_lists_commands(capsys):
    try:
        build_parser().parse_args(["--help"])
    except SystemExit as exc:
        assert exc.code == 0
    out = capsys.readouterr().out
    assert "run" in out and "config" in out and "NIGHTCAST_" in out


def test_run_help_lists_flags(capsys):
    try:
        build_parser().parse_args(["run", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    for flag in ("--config", "--source", "--path", "--tickers", "--out"):
        assert flag in out


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
