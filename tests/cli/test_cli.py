"""The command line: help for every option, real runs, and clear errors for bad input."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from oraculum.cli.main import main

SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GLOBAL_FLAGS = {"--store", "--s3-endpoint", "--progress", "-v", "--verbose"}


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found.extend(_commands(command, f"{prefix}{name} "))
    return found


@pytest.mark.parametrize(("name", "command"), _commands(main))
def test_every_verb_and_option_is_explained(name: str, command: click.Command) -> None:
    assert command.help, f"oraculum {name} has no help text"
    for param in command.params:
        if isinstance(param, click.Option):
            assert param.help, f"oraculum {name} {param.opts} has no help text"
    result = CliRunner().invoke(main, [*name.split(), "--help"])
    assert result.exit_code == 0, result.output
    # the global options are taken (and shown) after every verb too, see test_global_options.py
    flags = {opt for param in command.params for opt in param.opts}
    assert GLOBAL_FLAGS <= flags, f"oraculum {name} lacks {GLOBAL_FLAGS - flags}"
    assert all(flag in result.output for flag in GLOBAL_FLAGS), result.output


def test_preprocess_and_inspect(tmp_path: Path) -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip("real spectra not available")
    runner = CliRunner()
    store = str(tmp_path / "store")
    result = runner.invoke(
        main, ["--store", store, "--no-progress", "preprocess", str(SHARED_DATA / "ondrejov"), "-d", "ond", "-j", "1"]
    )
    assert result.exit_code == 0, result.output
    assert "4 spectra stored, 0 files rejected" in result.output
    result = runner.invoke(main, ["--store", store, "dataset", "list"])
    assert result.exit_code == 0 and result.output.startswith("ond\t4 spectra")
    result = runner.invoke(main, ["--store", store, "dataset", "info", "ond", "--json"])
    assert result.exit_code == 0 and '"count": 4' in result.output
    again = runner.invoke(main, ["--store", store, "--no-progress", "preprocess", str(SHARED_DATA / "ondrejov"), "-d", "ond"])
    assert again.exit_code == 0 and "already done" in again.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["preprocess", ".", "-d", "x", "--shard", "3/3"], "need 0 <= I < N"),
        (["preprocess", ".", "-d", "x", "--shard", "a"], "is not I/N"),
        (["preprocess", ".", "-d", "x", "--start", "7000"], "must be greater than start"),
        (["preprocess", ".", "-d", "Bad Name"], "invalid dataset name"),
        (["preprocess", "/no/such/folder", "-d", "x"], "neither a folder"),
        (["preprocess", ".", "-d", "x", "--shard", "0/2", "--shards", "3"], "disagree"),
        (["dataset", "info", "missing"], "no dataset 'missing'"),
        (["--store", "s3://bucket", "dataset", "list"], "ORACULUM_S3_ENDPOINT"),
    ],
)
def test_bad_input_gives_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("ORACULUM_S3_ENDPOINT", raising=False)
    if "--store" not in args:
        args = ["--store", str(tmp_path / "store"), *args]
    result = CliRunner().invoke(main, args)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
