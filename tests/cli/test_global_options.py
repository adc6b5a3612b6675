"""The global options (--store, --s3-endpoint, --progress/--no-progress, -v) are accepted before
and after the verb, a value after the verb wins, and the ORACULUM_* variables still apply. (That
every verb takes them and shows them in its --help: tests/cli/test_cli.py.)"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from oraculum.cli.main import main
from tests.spectra.layouts import lamost_lrs_image, lamost_wavelength_A, star_flux


class Probe(Exception):
    """Raised by the stand-in for open_store once it has seen the settings."""


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The settings each verb opens its store with (the verb stops right there)."""
    import oraculum.store

    recorded: list[Any] = []

    def probe(url: Any = None, settings: Any = None) -> Any:
        recorded.append(settings)
        raise Probe

    monkeypatch.setattr(oraculum.store, "open_store", probe)
    monkeypatch.delenv("ORACULUM_STORE", raising=False)
    monkeypatch.delenv("ORACULUM_S3_ENDPOINT", raising=False)
    return recorded


def _manifest(tmp_path: Path) -> str:
    path = tmp_path / "experiment.yaml"
    path.write_text("apiVersion: oraculum.dev/v1alpha1\nkind: ActiveLearningExperiment\nmetadata: {name: x}\n"
                    "spec: {dataset: pool, classes: [{name: a}, {name: b, target: true}], oracle: {labels: l.csv}}\n")
    return str(path)


#: verbs that open the store with the settings (MANIFEST: an experiment manifest file)
VERBS = {
    "dataset list": ["dataset", "list"],
    "dataset info": ["dataset", "info", "pool"],
    "evaluate": ["evaluate", "MANIFEST", "--iteration", "0"],
    "answer": ["answer", "MANIFEST", "-k", "0"],
    "run": ["run", "MANIFEST"],
}


@pytest.mark.parametrize("verb", sorted(VERBS))
@pytest.mark.parametrize("where", ["before", "after", "both"])
def test_store_and_endpoint_before_or_after_the_verb(tmp_path: Path, seen: list[Any], verb: str, where: str) -> None:
    words = [_manifest(tmp_path) if word == "MANIFEST" else word for word in VERBS[verb]]
    wanted = ["--store", "s3://after/x", "--s3-endpoint", "http://after:9000"]
    if where == "before":
        args = [*wanted, *words]
    elif where == "after":
        args = [*words, *wanted]
    else:  # the value after the verb overrides the one before it
        args = ["--store", "s3://before", "--s3-endpoint", "http://before:9000", *words, *wanted]
    result = CliRunner().invoke(main, args)
    assert "No such option" not in result.output, result.output
    assert isinstance(result.exception, Probe), result.output
    assert (seen[-1].store, seen[-1].s3_endpoint) == ("s3://after/x", "http://after:9000")


def test_nested_verb_group_takes_them_at_every_level(seen: list[Any]) -> None:
    result = CliRunner().invoke(main, ["--store", "/a", "dataset", "--store", "/b", "list", "--s3-endpoint", "http://e"])
    assert isinstance(result.exception, Probe), result.output
    assert (seen[-1].store, seen[-1].s3_endpoint) == ("/b", "http://e")


def test_environment_variables_still_apply_and_a_flag_after_the_verb_overrides_them(
        seen: list[Any], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORACULUM_STORE", "/from/env")
    monkeypatch.setenv("ORACULUM_S3_ENDPOINT", "http://env:9000")
    CliRunner().invoke(main, ["dataset", "list"])
    assert (seen[-1].store, seen[-1].s3_endpoint) == ("/from/env", "http://env:9000")
    CliRunner().invoke(main, ["dataset", "list", "--store", "/from/flag"])
    assert (seen[-1].store, seen[-1].s3_endpoint) == ("/from/flag", "http://env:9000")


@pytest.mark.parametrize("where", ["before", "after"])
def test_preprocess_writes_into_the_store_given_after_the_verb(tmp_path: Path, where: str) -> None:
    """The form docs/features.md shows: `oraculum preprocess SOURCE --dataset X --store DIR`."""
    source = tmp_path / "archive"
    source.mkdir()
    wavelength = lamost_wavelength_A()
    for i in range(3):
        (source / f"spec-{i}.fits").write_bytes(lamost_lrs_image(star_flux(wavelength, line=-0.2 * (i + 1))))
    store = tmp_path / "store"
    verb = ["preprocess", str(source), "--dataset", "tiny", "-j", "1"]
    flags = ["--store", str(store), "--no-progress"]
    args = [*flags, *verb] if where == "before" else [*verb, *flags]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "3 spectra stored, 0 files rejected" in result.output
    assert (store / "datasets" / "tiny" / "index.json").is_file()


def test_demo_sees_the_store_given_after_it(tmp_path: Path) -> None:
    answer = CliRunner().invoke(main, ["demo", "--store", "s3://bucket"])
    assert answer.exit_code != 0 and "local folder" in answer.output, answer.output


@pytest.mark.parametrize("where", ["before", "after"])
def test_progress_flag_before_or_after_the_verb(tmp_path: Path, where: str) -> None:
    verb = ["synth", str(tmp_path / f"out-{where}"), "--count", "3"]
    args = ["--progress", *verb] if where == "before" else [*verb, "--progress"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "synth" in result.stderr and "3/3" in result.stderr  # the tqdm bar
    quiet = CliRunner().invoke(main, ["--progress", *verb, "--no-progress"])
    assert quiet.exit_code == 0 and "3/3" not in quiet.stderr


@pytest.mark.parametrize(("args", "level"), [
    (["-v", "crds", "--check", "--out", "."], logging.INFO),
    (["crds", "--check", "--out", ".", "-vv"], logging.DEBUG),
    (["-v", "crds", "--check", "--out", ".", "-v"], logging.DEBUG),  # -v counts wherever it is given
])
def test_verbose_before_or_after_the_verb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str],
                                          level: int) -> None:
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # restored after the test
    CliRunner().invoke(main, args)
    assert root.level == level
