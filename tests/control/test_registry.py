"""The local registry of resources (what the API lists and changes on one machine), and the local
runner following it: a suspend or delete through the registry reaches a running `oraculum run`."""

from __future__ import annotations

from pathlib import Path

import pytest

from oraculum.manifests import parse_manifest
from oraculum.control.registry import AlreadyExists, LocalRegistry
from oraculum.control.runner import LocalRunner
from oraculum.settings import Settings
from oraculum.store import LocalStore

PPJ = {"apiVersion": "oraculum.dev/v1alpha1", "kind": "PreprocessingJob", "metadata": {"name": "pool"},
       "spec": {"source": {"synthetic": {"count": 10}}, "dataset": "pool"}}


def test_registry_create_list_suspend_delete(tmp_path: Path) -> None:
    registry = LocalRegistry(LocalStore(tmp_path))
    created = registry.apply(parse_manifest(PPJ), managed_by="api", create_only=True)
    assert created.uid.startswith("local-") and created.managed_by == "api" and created.spec["shards"] == 1
    with pytest.raises(AlreadyExists):
        registry.apply(parse_manifest(PPJ), create_only=True)
    assert registry.names("PreprocessingJob") == ["pool"] and registry.names("ActiveLearningExperiment") == []
    suspended = registry.set_suspend("PreprocessingJob", "pool", True)
    assert suspended is not None and suspended.spec["suspend"] is True and suspended.uid == created.uid
    assert registry.set_suspend("PreprocessingJob", "ghost", True) is None
    assert registry.delete("PreprocessingJob", "pool") and not registry.delete("PreprocessingJob", "pool")
    assert registry.get("PreprocessingJob", "pool") is None


def test_the_runner_registers_its_manifests_and_follows_changes(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    runner = LocalRunner(store, Settings(store=str(tmp_path)), echo=lambda line: None)
    resource = runner._load(parse_manifest(PPJ))
    registry = LocalRegistry(store)
    assert registry.get("PreprocessingJob", "pool").managed_by == "oraculum-run"  # type: ignore[union-attr]
    assert runner._desired(resource) is resource  # nothing changed
    runner._save(resource)
    registry.set_suspend("PreprocessingJob", "pool", True)  # e.g. POST /preprocessingjobs/pool/suspend
    reloaded = runner._desired(resource)
    assert reloaded is not None and reloaded is not resource
    assert reloaded.raw_spec["suspend"] is True and reloaded.generation == resource.generation + 1
    registry.delete("PreprocessingJob", "pool")  # DELETE /preprocessingjobs/pool
    assert runner._desired(reloaded) is None
