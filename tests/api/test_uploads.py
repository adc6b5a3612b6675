"""Uploads through the API (``/api/v1/uploads``), the client (``oraculum.client.rest``) and the CLI
(``oraculum upload``), with real processes: the API as a uvicorn subprocess over a local store and
over the moto S3 server, real LAMOST FITS from ../shared/data, a killed client and a killed API.
Then ``oraculum preprocess`` reads the uploaded prefix: the upload is usable as an archive."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from tests.support.api_fixtures import ROOT, TOKENS, ApiProcess, auth
from tests.support.client_harness import client, local_env, running_api, s3_env, s3_settings_for
from oraculum.cli.main import main
from oraculum.client import ClientError
from oraculum.spectra.datasets import Dataset
from oraculum.store import LocalStore, ObjectStore, open_store
from oraculum.client.upload import walk

V1 = "/api/v1"
MEDIUM_RES = "lamost-dr7/med-58408-TD230151N343645T01_sp01-015.fits"  # 1,028,160 bytes


class Interrupted(Exception):
    """Raised from the chunk callback: the upload stops as a killed process would."""


def digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiProcess, LocalStore]]:
    """One API over an empty local store for the module; each test uses its own prefix."""
    root = tmp_path_factory.mktemp("uploads")
    store = root / "store"
    with running_api(local_env(store, ORACULUM_CACHE_DIR=str(root / "cache")), root / "api.log") as api:
        yield api, LocalStore(store)


@pytest.fixture
def http(served: tuple[ApiProcess, LocalStore]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0].url + V1, headers=auth("admin"), timeout=30) as session:
        yield session


def files_of(folder: Path) -> dict[str, bytes]:
    return {relative: path.read_bytes() for path, relative, _ in walk([folder]) if path is not None}


def leftovers(store: ObjectStore) -> list[str]:
    return [info.key for prefix in ("uploads/sessions/", "uploads/parts/") for info in store.list(prefix)]


def test_a_tree_of_real_fits_is_uploaded_byte_for_byte_once_and_preprocessed(
        served: tuple[ApiProcess, LocalStore], shared_data: Path, tmp_path: Path) -> None:
    api, store = served
    tree = shared_data / "lamost-dr2"
    expected = files_of(tree)
    assert len(expected) >= 15 and any("/" in name for name in expected)  # nested folders
    with client(api) as admin:
        report = admin.upload(tree, "dr2", progress=False)
        assert report.ok and sorted(report.uploaded) == sorted(expected), report.summary()
        assert report.bytes_sent == report.bytes_total == sum(len(b) for b in expected.values())
        for relative, data in expected.items():
            assert store.get_bytes(f"archive/dr2/{relative}") == data, relative
        assert leftovers(store) == []

        again = admin.upload(tree, "dr2", progress=False)  # nothing to send: every file is there
        assert again.uploaded == [] and sorted(again.skipped) == sorted(expected) and again.bytes_sent == 0

        copy = tmp_path / "copies"
        copy.mkdir()
        original = next(name for name in sorted(expected) if name.endswith(".fits"))
        shutil.copy(tree / original, copy / "same-content.fits")
        duplicates = admin.upload(copy, "dr2", progress=False)
        assert duplicates.duplicates == [("same-content.fits", original)] and duplicates.bytes_sent == 0
        assert not store.exists("archive/dr2/same-content.fits")
        assert "same-content.fits has the same content as" in duplicates.summary()

        # the uploaded prefix is an archive: preprocess it, and compare with the original folder
        assert report.source == f"{store.url}/archive/dr2"
        for source, name in ((report.source, "uploaded-dr2"), (str(tree), "direct-dr2")):
            result = CliRunner().invoke(main, ["--store", store.url, "--no-progress", "preprocess", source,
                                               "--dataset", name, "--workers", "1"])
            assert result.exit_code == 0, result.output
        uploaded, direct = Dataset.open(store, "uploaded-dr2"), Dataset.open(store, "direct-dr2")
        assert uploaded.index.count == direct.index.count >= 15
        assert [s.sha256 for s in uploaded.index.shards] == [s.sha256 for s in direct.index.shards]
        assert admin.dataset("uploaded-dr2").count == uploaded.index.count


def test_an_interrupted_upload_sends_only_the_rest(served: tuple[ApiProcess, LocalStore], shared_data: Path,
                                                     http: httpx.Client) -> None:
    api, store = served
    path = shared_data / MEDIUM_RES
    data = path.read_bytes()
    chunk = 64 * 1024
    sent: list[int] = []

    def stop_after_five(relative: str, received: int, size: int) -> None:
        sent.append(received)
        if len(sent) == 5:
            raise Interrupted

    with client(api) as admin:
        with pytest.raises(Interrupted):
            admin.upload(path, "interrupted", progress=False, chunk_size=chunk, on_chunk=stop_after_five)
        pending = http.get("/uploads", params={"prefix": "interrupted"}).json()
        assert pending["total"] == 1 and pending["uploads"][0]["received"] == 5 * chunk
        assert pending["uploads"][0]["fraction"] == pytest.approx(5 * chunk / len(data))
        assert not store.exists(f"archive/interrupted/{path.name}")

        report = admin.upload(path, "interrupted", progress=False, chunk_size=16 * 1024)  # its own chunk size wins
    assert report.uploaded == [path.name] and report.resumed == [path.name]
    assert report.bytes_sent == len(data) - 5 * chunk
    assert store.get_bytes(f"archive/interrupted/{path.name}") == data
    assert leftovers(store) == [] and http.get("/uploads", params={"prefix": "interrupted"}).json()["total"] == 0


@pytest.mark.slow
def test_a_killed_cli_and_a_killed_api_resume(shared_data: Path, tmp_path: Path) -> None:
    """SIGKILL the uploading ``oraculum upload`` and then the API mid-upload; a new API on the
    same store and the same command again send only the bytes the store does not have."""
    path = shared_data / MEDIUM_RES
    size = path.stat().st_size
    store = LocalStore(tmp_path / "store")
    env = local_env(tmp_path / "store")
    command = [sys.executable, "-m", "oraculum.cli.main", "--no-progress", "upload", str(path), "--to", "killed",
               "--chunk-size", "4096", "--json"]
    cli_env = {**os.environ, "ORACULUM_TOKEN": TOKENS["admin"]}
    first = ApiProcess(env, tmp_path / "api.log").start()
    uploader = None
    try:
        uploader = subprocess.Popen([*command, "--api", first.url], env=cli_env, cwd=str(ROOT),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        received = 0
        with httpx.Client(base_url=first.url + V1, headers=auth("admin"), timeout=10) as http:
            while received < 8 * 4096 and time.monotonic() < deadline:
                uploads = http.get("/uploads", params={"prefix": "killed"}).json()["uploads"]
                received = uploads[0]["received"] if uploads else 0
                time.sleep(0.02)
        uploader.send_signal(signal.SIGKILL)
        uploader.wait(timeout=10)
        first.kill()  # and the API, mid-upload
    finally:
        if uploader is not None and uploader.poll() is None:
            uploader.kill()
        first.kill()
    sessions = [json.loads(store.get_bytes(info.key)) for info in store.list("uploads/sessions/")]
    assert len(sessions) == 1, "the partial upload is in the store"
    kept = sessions[0]["received"]
    assert 8 * 4096 <= kept < size, kept
    assert not store.exists(f"archive/killed/{path.name}")

    with running_api(env, tmp_path / "api2.log") as second:
        done = subprocess.run([*command, "--api", second.url], env=cli_env, cwd=str(ROOT), capture_output=True,
                              text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["uploaded"] == [path.name] and report["resumed"] == [path.name]
    assert report["bytes_sent"] == size - kept, (report, kept)
    assert store.get_bytes(f"archive/killed/{path.name}") == path.read_bytes()
    assert leftovers(store) == []


def test_a_corrupted_chunk_or_file_stores_nothing(served: tuple[ApiProcess, LocalStore], http: httpx.Client) -> None:
    _, store = served
    data = os.urandom(5000)
    declared = http.post("/uploads", json={"prefix": "corrupt", "path": "a.fits", "size": len(data),
                                           "sha256": sha(data), "chunk_size": 1024})
    assert declared.status_code == 201, declared.text
    upload = declared.json()
    assert upload["chunk_size"] == 1024 and upload["received"] == 0
    chunk = f"/uploads/{upload['id']}/chunks"
    damaged = bytes([data[0] ^ 0xFF]) + data[1:1024]  # one flipped bit pattern in transit
    answer = http.put(chunk, params={"offset": 0}, content=damaged, headers={"Content-Digest": digest(data[:1024])})
    assert answer.status_code == 422 and "a.fits" in answer.json()["detail"] and "nothing stored" in answer.json()["detail"]
    assert http.get(f"/uploads/{upload['id']}").json()["received"] == 0
    assert list(store.list(f"uploads/parts/{upload['id']}/")) == []
    for header in ({}, {"Content-Digest": "sha-256=abc"}, {"Content-Digest": "md5=:AAAA:"},
                   {"Content-Digest": "sha-256=:" + base64.b64encode(b"short").decode() + ":"}):
        answer = http.put(chunk, params={"offset": 0}, content=data[:1024], headers=header)
        assert answer.status_code == 422, (header, answer.text)

    # every chunk checks out, but the file is not the one declared: refused at completion
    wrong = {"prefix": "corrupt", "path": "b.fits", "size": len(data), "sha256": sha(b"another file"), "chunk_size": 1024}
    upload = http.post("/uploads", json=wrong).json()
    for offset in range(0, len(data), 1024):
        piece = data[offset:offset + 1024]
        answer = http.put(f"/uploads/{upload['id']}/chunks", params={"offset": offset}, content=piece,
                          headers={"Content-Digest": digest(piece)})
        assert answer.status_code == 200, answer.text
    answer = http.post(f"/uploads/{upload['id']}/complete")
    assert answer.status_code == 422 and "nothing stored" in answer.json()["detail"], answer.text
    assert not store.exists("archive/corrupt/b.fits") and list(store.list("archive/corrupt/")) == []
    assert http.get(f"/uploads/{upload['id']}").status_code == 404
    assert [k for k in leftovers(store) if upload["id"] in k] == []


@pytest.mark.parametrize(("field", "value"), [
    ("path", "../escape.fits"), ("path", "a/../../escape.fits"), ("path", "/etc/passwd"), ("path", "C:/x.fits"),
    ("path", "a\\..\\b.fits"), ("path", "a//b.fits"), ("path", "a/./b.fits"), ("path", ".hidden.fits"),
    ("path", "a/.x.tmp"), ("path", "-rf.fits"), ("path", "name with space.fits"), ("path", "nul\x00.fits"),
    ("path", "dir/"), ("path", "é.fits"), ("path", "x" * 300), ("prefix", "../up"), ("prefix", "/abs"),
    ("prefix", "a/../../b"), ("prefix", "a%2f..%2fb"),
])
def test_traversal_and_unsafe_names_are_refused_naming_them(served: tuple[ApiProcess, LocalStore], http: httpx.Client,
                                                            field: str, value: str) -> None:
    _, store = served
    around = sorted(store.root.parent.parent.rglob("*"))
    body = {"prefix": "names", "path": "ok.fits", "size": 1, "sha256": sha(b"x"), field: value}
    answer = http.post("/uploads", json=body)
    assert answer.status_code == 422, answer.text
    messages = " ".join(str(error.get("msg")) for error in answer.json()["detail"])
    assert f"{field} " in messages and repr(value)[1:-1][:60] in messages, messages
    assert sorted(store.root.parent.parent.rglob("*")) == around  # nothing written, inside the store or out


def test_unsafe_names_in_a_folder_fail_alone(served: tuple[ApiProcess, LocalStore], tmp_path: Path) -> None:
    api, store = served
    (tmp_path / "tree" / "sub").mkdir(parents=True)
    (tmp_path / "tree" / "sub" / "good.fits").write_bytes(b"good")
    (tmp_path / "tree" / "bad name.fits").write_bytes(b"bad")
    (tmp_path / "tree" / ".DS_Store").write_bytes(b"hidden: skipped")
    with client(api) as admin:
        report = admin.upload([tmp_path / "tree", tmp_path / "missing"], "mixed", progress=False)
    assert report.uploaded == ["sub/good.fits"] and store.get_bytes("archive/mixed/sub/good.fits") == b"good"
    failures = dict(report.failed)
    assert "'bad name.fits'" in failures["bad name.fits"] and "no such file" in failures[str(tmp_path / "missing")]
    assert not report.ok


def test_offsets_sizes_conflicts_and_abort(served: tuple[ApiProcess, LocalStore], http: httpx.Client) -> None:
    _, store = served
    data = os.urandom(2500)
    upload = http.post("/uploads", json={"prefix": "rules", "path": "f.fits", "size": len(data), "sha256": sha(data),
                                         "chunk_size": 1024}).json()
    chunks = f"/uploads/{upload['id']}/chunks"

    def put(offset: int, piece: bytes) -> httpx.Response:
        return http.put(chunks, params={"offset": offset}, content=piece, headers={"Content-Digest": digest(piece)})

    assert put(0, data[:1024]).json()["received"] == 1024
    again = put(0, data[:1024])  # a retried chunk whose answer was lost: told where to go on
    assert again.status_code == 409 and again.json()["detail"]["received"] == 1024
    assert put(1024, data[1024:1500]).status_code == 422  # chunks are 1024 bytes, except the last
    early = http.post(f"/uploads/{upload['id']}/complete")
    assert early.status_code == 409 and early.json()["detail"]["received"] == 1024
    assert put(1024, data[1024:2048]).status_code == 200
    assert put(2048, data[2048:] + b"extra").status_code == 422  # past the declared size
    # the same declaration finds the same upload, where it stands (no client state needed)
    resumed = http.post("/uploads", json={"prefix": "rules", "path": "f.fits", "size": len(data), "sha256": sha(data)})
    assert resumed.status_code == 200 and resumed.json()["id"] == upload["id"] and resumed.json()["received"] == 2048
    assert resumed.json()["chunk_size"] == 1024
    assert http.delete(f"/uploads/{upload['id']}").status_code == 204
    assert http.get(f"/uploads/{upload['id']}").status_code == 404
    assert [k for k in leftovers(store) if upload["id"] in k] == []

    empty = http.post("/uploads", json={"prefix": "rules", "path": "empty.fits", "size": 0, "sha256": sha(b"")}).json()
    done = http.post(f"/uploads/{empty['id']}/complete").json()
    assert done["status"] == "complete" and store.get_bytes("archive/rules/empty.fits") == b""
    assert http.post(f"/uploads/{empty['id']}/complete").json()["status"] == "complete"  # idempotent

    taken = http.post("/uploads", json={"prefix": "rules", "path": "empty.fits", "size": 3, "sha256": sha(b"abc")})
    assert taken.status_code == 409 and "archive/rules/empty.fits exists with different content" in taken.json()["detail"]["message"]
    store.put_bytes("archive/rules/placed.fits", b"placed by hand")  # not through the API: found by its path
    placed = http.post("/uploads", json={"prefix": "rules", "path": "placed.fits", "size": 14,
                                         "sha256": sha(b"placed by hand")}).json()
    assert placed["status"] == "exists"
    viewer = http.post("/uploads", json={"prefix": "rules", "path": "v.fits", "size": 1, "sha256": sha(b"v")},
                       headers=auth("viewer"))
    assert viewer.status_code == 403

    def send(path: str, content: bytes) -> httpx.Response:
        started = http.post("/uploads", json={"prefix": "rules", "path": path, "size": len(content),
                                              "sha256": sha(content)}).json()
        assert http.put(f"/uploads/{started['id']}/chunks", params={"offset": 0}, content=content,
                        headers={"Content-Digest": digest(content)}).status_code == 200
        return http.post(f"/uploads/{started['id']}/complete")

    assert send("clash", b"a file").json()["status"] == "complete"
    clash = send("clash/inside.fits", b"under a file of the same name")  # a local store cannot: 409, not 500
    assert clash.status_code == 409 and "a file and a folder" in clash.json()["detail"], clash.text
    assert store.get_bytes("archive/rules/clash") == b"a file"


def test_a_damaged_session_document_is_started_again_not_a_500(served: tuple[ApiProcess, LocalStore],
                                                              http: httpx.Client) -> None:
    _, store = served
    data = os.urandom(1500)
    declaration = {"prefix": "damaged", "path": "d.fits", "size": len(data), "sha256": sha(data), "chunk_size": 1024}
    upload = http.post("/uploads", json=declaration).json()
    store.put_bytes(f"uploads/sessions/{upload['id']}.json", b"{not json")  # a damaged store
    assert http.get("/uploads", params={"prefix": "damaged"}).json()["total"] == 0
    assert http.get(f"/uploads/{upload['id']}").status_code == 404
    again = http.post("/uploads", json=declaration)
    assert again.status_code == 201 and again.json()["id"] == upload["id"] and again.json()["received"] == 0
    for offset in (0, 1024):
        piece = data[offset:offset + 1024]
        assert http.put(f"/uploads/{upload['id']}/chunks", params={"offset": offset}, content=piece,
                        headers={"Content-Digest": digest(piece)}).status_code == 200
    assert http.post(f"/uploads/{upload['id']}/complete").json()["status"] == "complete"
    assert store.get_bytes("archive/damaged/d.fits") == data


def test_client_errors_stop_an_upload_that_cannot_succeed(served: tuple[ApiProcess, LocalStore], tmp_path: Path) -> None:
    api, _ = served
    (tmp_path / "a.fits").write_bytes(b"a")
    from oraculum.client import Client

    with Client(api.url, token=TOKENS["oracle"]) as oracle, pytest.raises(ClientError) as refused:
        oracle.upload(tmp_path, "nope", progress=False)
    assert refused.value.status == 403 and "admin" in refused.value.message
    result = CliRunner().invoke(main, ["upload", str(tmp_path), "--to", "nope", "--api", "http://127.0.0.1:9"],
                                env={"ORACULUM_TOKEN": TOKENS["admin"]})
    assert result.exit_code == 1 and "cannot be reached" in result.output and "run the same command again" in result.output
    token = tmp_path / "token"
    token.write_text("")
    result = CliRunner().invoke(main, ["upload", str(tmp_path), "--to", "x", "--token-file", str(token)])
    assert result.exit_code == 1 and "is empty" in result.output


def test_upload_to_s3_through_the_api_resumes_and_preprocesses(s3_endpoint: str, shared_data: Path,  # noqa: F811
                                                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = s3_settings_for(s3_endpoint, f"uploads-{uuid.uuid4().hex[:8]}", tmp_path / "cache")
    store = open_store(settings=settings)
    tree = shared_data / "lamost-dr2" / "B5591903"
    expected = files_of(tree)
    with running_api(s3_env(settings), tmp_path / "api.log") as api, client(api) as admin:
        calls: list[int] = []

        def stop_after_two(relative: str, received: int, size: int) -> None:
            calls.append(received)
            if len(calls) == 2:
                raise Interrupted

        with pytest.raises(Interrupted):  # 4 files at a time: all stop at their next chunk
            admin.upload(tree, "b559", progress=False, chunk_size=16 * 1024, on_chunk=stop_after_two)
        sessions = [json.loads(store.get_bytes(info.key)) for info in store.list("uploads/sessions/")]
        partial = {s["path"]: s["received"] for s in sessions if s["received"]}
        finished = {info.key.removeprefix("archive/b559/") for info in store.list("archive/b559/")}
        assert partial and list(store.list("uploads/parts/")), "the parts wait in the bucket"
        report = admin.upload(tree, "b559", progress=False)
    held = sum(partial.values()) + sum(len(expected[name]) for name in finished)
    assert report.ok and sorted(report.uploaded + report.skipped) == sorted(expected)
    assert sorted(report.skipped) == sorted(finished) and sorted(report.resumed) == sorted(partial)
    assert report.bytes_sent == report.bytes_total - held < report.bytes_total
    for relative, data in expected.items():
        assert store.get_bytes(f"archive/b559/{relative}") == data
    assert leftovers(store) == []
    assert report.source == f"{store.url}/archive/b559"
    for name in ("ORACULUM_S3_ENDPOINT", "ORACULUM_S3_ACCESS_KEY", "ORACULUM_S3_SECRET_KEY", "ORACULUM_S3_REGION"):
        monkeypatch.setenv(name, str(getattr(settings, name.removeprefix("ORACULUM_").lower())))
    result = CliRunner().invoke(main, ["--store", settings.store, "--no-progress", "preprocess", report.source,
                                       "--dataset", "b559", "--workers", "1"])
    assert result.exit_code == 0, result.output
    assert Dataset.open(store, "b559", cache_dir=tmp_path / "cache").index.count == len(expected)
