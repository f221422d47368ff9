"""`gumtool` alone, `gumtool COMMAND -h`, bad commands and flags, and progress output."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from gumtool.cli import COMMANDS, main
from gumtool.progress import Progress

NAMES = ["balance", "clean", "import", "merge", "migrate", "readdims", "reindex", "stats"]


def test_gumtool_alone_lists_the_commands_and_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.startswith("gumtool is part of gumshoe. It has several subcommands:\n")
    for name in NAMES:
        assert f"\n  {name} " in err
    assert "Run 'gumtool COMMAND -h' to see how to use a particular command" in err


@pytest.mark.parametrize("flag", ["-h", "--help", "help"])
def test_help_prints_the_usage_to_stdout(flag: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([flag]) == 0
    assert "subcommands" in capsys.readouterr().out


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["frobnicate"]) == 1
    assert capsys.readouterr().err.startswith('Error: no such command "frobnicate"\n\ngumtool')


FLAGS = {
    "migrate": ["--old-db-path", "--new-db-config", "--parallelism"],
    "merge": ["--new-db-config", "--db-paths", "--parallelism"],
    "balance": ["--source-db-dirs", "--dest-db-configs", "--workdir", "--dry-run"],
    "clean": ["--dir", "--dry-run"],
    "import": ["--config", "--mapping", "--preset", "--url", "--parallelism", "--strict"],
    "stats": ["--dir", "--json", "--parallelism"],
    "readdims": ["--dir", "--column"],
    "reindex": ["--archive", "--new-db-config", "--from", "--to", "--flush-rows"],
}


@pytest.mark.parametrize("name", NAMES)
def test_command_help_explains_it(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert sorted(COMMANDS) == NAMES
    assert main([name, "-h"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gumtool {name} ")
    for flag in FLAGS[name]:
        assert flag in out
    assert "example: gumtool " + name in out


def test_missing_required_flag_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--old-db-path", "x"]) == 2
    assert "--new-db-config" in capsys.readouterr().err
    assert main(["stats", "--dir", "x", "--parallelism", "0"]) == 2


def test_missing_list_flag_names_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["merge", "--new-db-config", "x.toml"]) == 1
    assert "need at least one entry in --db-paths" in capsys.readouterr().err
    assert main(["balance", "--dest-db-configs", "a.toml"]) == 1
    assert "need at least one dir in --source-db-dirs" in capsys.readouterr().err


def test_errors_are_one_line_on_stderr(capsys: pytest.CaptureFixture[str], tmp_path) -> None:
    assert main(["stats", "--dir", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err
    assert err == f"gumtool stats: error: {tmp_path / 'nope'}: no such database directory\n"
    assert main(["stats", "--dir", str(tmp_path)]) == 1
    assert "not a gumshoe database (no db.json)" in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    done = subprocess.run([sys.executable, "-m", "gumtool"], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert "readdims" in done.stderr


def test_progress_is_quiet_off_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("rows", 1000, out)  # a StringIO is no terminal
    for _ in range(100):
        p.advance(10)
    p.finish()
    assert out.getvalue() == ""


def test_progress_bar_on_a_terminal() -> None:
    out = io.StringIO()
    p = Progress("intervals", 4, out, tty=True)
    for _ in range(5):
        p.advance()  # one too many: the count stops at the total
    p.finish()
    assert p.done == 4
    last = out.getvalue().split("\r")[-1]
    assert last.startswith("intervals: 100%|")  # tqdm: label, percentage, bar
    assert "4/4 [" in last and "it/s]" in last  # count, elapsed<ETA, rate
    assert out.getvalue().endswith("\n")
    quiet = io.StringIO()
    Progress("intervals", 4, quiet, tty=True, quiet=True).finish()
    assert quiet.getvalue() == ""
