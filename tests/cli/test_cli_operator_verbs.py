"""The verbs added for the operator and the local runner: errors a person sees are one clear line."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from oraculum.cli.main import main


def test_operator_without_any_cluster_fails_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KUBECONFIG", raising=False)
    result = CliRunner().invoke(main, ["operator"])
    assert result.exit_code == 1
    assert "cannot log in to Kubernetes" in result.output and "kubeconfig" in result.output


def test_run_refuses_a_bad_manifest_with_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: oraculum.dev/v1alpha1\nkind: ActiveLearningExperiment\nmetadata: {name: x}\n"
                   "spec: {dataset: pool, classes: [{name: a}, {name: b, target: true}], acquisition: {batchSize: -5}}\n")
    result = CliRunner().invoke(main, ["--store", str(tmp_path / "store"), "run", str(bad)])
    assert result.exit_code == 1
    assert "bad.yaml" in result.output and "acquisition.batchSize" in result.output


def test_answer_needs_a_label_file(tmp_path: Path) -> None:
    manifest = tmp_path / "human.yaml"
    manifest.write_text("apiVersion: oraculum.dev/v1alpha1\nkind: ActiveLearningExperiment\nmetadata: {name: x}\n"
                        "spec: {dataset: pool, classes: [{name: a}, {name: b, target: true}]}\n")
    result = CliRunner().invoke(main, ["--store", str(tmp_path / "store"), "answer", str(manifest), "--iteration", "0"])
    assert result.exit_code == 1 and "oracle.labels" in result.output


def test_every_new_option_has_help() -> None:
    for verb in ("run", "crds", "answer", "operator"):
        command = main.commands[verb]
        assert command.help and all(option.help for option in command.params if hasattr(option, "help") and option.param_type_name == "option")
