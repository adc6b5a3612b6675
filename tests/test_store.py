"""Both object-store backends behave the same: a local folder and S3 (moto server, minio client)."""

from __future__ import annotations

import pytest

from oraculum.store import KeyNotFound, LocalStore, ObjectStore, StoreError, open_store


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    settings = request.getfixturevalue("s3_settings")
    return open_store(settings.store + "/some/prefix", settings)


def test_put_get_list_delete(store: ObjectStore, tmp_path) -> None:
    store.put_bytes("datasets/a/index.json", b"{}")
    store.put_bytes("datasets/a/part-00000.h5", b"x" * 1000)
    store.put_bytes("datasets/b/index.json", b"[]")
    assert store.get_bytes("datasets/a/index.json") == b"{}"
    assert [(i.key, i.size) for i in store.list("datasets/a/")] == [
        ("datasets/a/index.json", 2),
        ("datasets/a/part-00000.h5", 1000),
    ]
    assert [i.key for i in store.list()] == [
        "datasets/a/index.json",
        "datasets/a/part-00000.h5",
        "datasets/b/index.json",
    ]
    assert store.exists("datasets/b/index.json")
    assert not store.exists("datasets/c/index.json")
    store.put_bytes("datasets/b/index.json", b"replaced")
    assert store.get_bytes("datasets/b/index.json") == b"replaced"
    store.delete("datasets/b/index.json")
    store.delete("datasets/b/index.json")  # deleting twice is fine
    assert not store.exists("datasets/b/index.json")
    with pytest.raises(KeyNotFound, match="datasets/b/index.json"):
        store.get_bytes("datasets/b/index.json")


def test_files_round_trip(store: ObjectStore, tmp_path) -> None:
    source = tmp_path / "in.bin"
    source.write_bytes(bytes(range(256)) * 5000)
    store.put_file("x/in.bin", source)
    target = tmp_path / "out.bin"
    store.get_file("x/in.bin", target)
    assert target.read_bytes() == source.read_bytes()
    with pytest.raises(KeyNotFound):
        store.get_file("x/missing.bin", tmp_path / "missing")


@pytest.mark.parametrize("key", ["", "/abs", "a/../b", "a//b", "./a"])
def test_bad_keys_are_refused(store: ObjectStore, key: str) -> None:
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_bytes(key, b"")


def test_listing_a_missing_bucket_or_folder_is_empty(tmp_path, s3_settings) -> None:
    assert list(LocalStore(tmp_path / "nowhere").list()) == []
    assert list(open_store(s3_settings.store, s3_settings).list()) == []


def test_open_store_urls(tmp_path, s3_settings) -> None:
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    assert open_store(f"file://{tmp_path}").url == str(tmp_path)
    with pytest.raises(StoreError, match="unsupported store URL"):
        open_store("ftp://host/x")
    with pytest.raises(StoreError, match="no bucket"):
        open_store("s3://", s3_settings)
    no_endpoint = s3_settings.model_copy(update={"s3_endpoint": None})
    with pytest.raises(StoreError, match="ORACULUM_S3_ENDPOINT"):
        open_store("s3://bucket", no_endpoint)
