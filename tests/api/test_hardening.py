"""Requests that used to take the gateway down or answer 500 (issue 20, items 2, 3, 6 and 7).

* Uploads: declared sizes and chunk counts are capped by settings (422 naming the setting); an
  abort (and the hourly expiry) deletes the parts that exist, in batches (S3 DeleteObjects), on a
  pool of its own: 20 aborts of 1 TiB declared in 1 KiB chunks (about a billion deletes each
  before) return at once, and the API keeps answering /readyz and data meanwhile.
* Parsing: a YAML alias bomb is refused before it is expanded; 1000-deep nesting, NaN, lone
  surrogates, ``kind: {}`` and other malformed bodies are 4xx naming the problem, never 500.
* Limits: per-token rate limits (429 with Retry-After, in-process and shared through Redis), one
  thread pool per kind of work, a header deadline and size limit for slow clients, and a limit
  on what a gzip-compressed archive file may decompress to.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import json
import os
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient

from tests.support.api_fixtures import auth, client_for, settings_for
from tests.support.api_world import EXPERIMENT, manifest
from tests.support.client_harness import local_env, running_api
from oraculum.api.app import create_app
from oraculum.api.uploads import Uploads
from oraculum.spectra.readers import read_spectrum
from oraculum.spectra.spectrum import SpectrumRejected
from oraculum.store import LocalStore, ObjectStore, open_store

V1 = "/api/v1"
I1 = f"{V1}/experiments/{EXPERIMENT}/iterations/1"
IDX = 55  # an oracle item of iteration 1's batch (see api_world)
TIB = 2**40


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digest(data: bytes) -> str:
    return "sha-256=:" + base64.b64encode(hashlib.sha256(data).digest()).decode() + ":"


@pytest.fixture
def client(local_store: Path) -> Iterator[TestClient]:
    with TestClient(create_app(settings_for(local_store)), raise_server_exceptions=False) as test_client:
        yield test_client


# -- 2. uploads: caps, aborts and expiry that cost what was uploaded ------------------------------------

def test_declared_sizes_and_chunk_counts_are_capped_naming_the_setting(client: TestClient) -> None:
    declare = {"prefix": "caps", "path": "big.fits", "sha256": "0" * 64}
    huge = client.post(f"{V1}/uploads", json={**declare, "size": TIB, "chunk_size": 1024}, headers=auth("admin"))
    assert huge.status_code == 422 and "ORACULUM_API_UPLOAD_MAX_BYTES" in huge.text, huge.text
    largest = 16 * 1024**3  # the default cap: allowed in the server's chunks, refused in the smallest ones
    many = client.post(f"{V1}/uploads", json={**declare, "size": largest, "chunk_size": 1024}, headers=auth("admin"))
    assert many.status_code == 422 and "ORACULUM_API_UPLOAD_MAX_CHUNKS" in many.text, many.text
    assert "use chunks of at least 171799 bytes" in many.text
    fine = client.post(f"{V1}/uploads", json={**declare, "size": largest}, headers=auth("admin"))
    assert fine.status_code == 201 and fine.json()["chunk_size"] == 2 * 1024**2
    assert client.delete(f"{V1}/uploads/{fine.json()['id']}", headers=auth("admin")).status_code == 204


def test_aborting_the_largest_declarations_costs_what_was_uploaded(local_store: Path, tmp_path: Path) -> None:
    """The red team's case: 1 TiB declared in 1 KiB chunks (caps raised to allow it), aborted 20
    times at once. Before, each abort counted to a billion on the shared I/O threads under a
    lock, and ~11 of them hung every data endpoint and /readyz."""
    env = local_env(local_store, ORACULUM_API_UPLOAD_MAX_BYTES=str(TIB), ORACULUM_API_UPLOAD_MAX_CHUNKS=str(2**31))
    store = LocalStore(local_store)
    with running_api(env, tmp_path / "api.log") as api, \
            httpx.Client(base_url=api.url + V1, headers=auth("admin"), timeout=5) as http:
        ids = []
        for n in range(20):
            declared = http.post("/uploads", json={"prefix": "bomb", "path": f"f{n}.fits", "size": TIB,
                                                   "sha256": f"{n:064x}", "chunk_size": 1024})
            assert declared.status_code == 201, declared.text
            ids.append(declared.json()["id"])
        piece = os.urandom(1024)
        for upload_id in ids[:5]:  # some parts exist: those must go
            for offset in (0, 1024):
                assert http.put(f"/uploads/{upload_id}/chunks", params={"offset": offset}, content=piece,
                                headers={"Content-Digest": digest(piece)}).status_code == 200
        assert any(upload_id in info.key for info in store.list("uploads/parts/") for upload_id in ids)

        def abort(upload_id: str) -> tuple[int, float]:
            started = time.perf_counter()
            status = http.delete(f"/uploads/{upload_id}").status_code
            return status, time.perf_counter() - started

        with concurrent.futures.ThreadPoolExecutor(20) as pool:
            aborts = pool.map(abort, ids)
            ready = http.get(api.url + "/readyz")  # answered while the aborts run
            batch = http.get(f"/experiments/{EXPERIMENT}/batch")
            results = list(aborts)
        assert ready.status_code == 200 and batch.status_code == 200
        assert [status for status, _ in results] == [204] * 20
        print(f"20 aborts of {TIB} bytes in 1 KiB chunks: slowest {max(s for _, s in results):.3f} s")
        assert all(http.get(f"/uploads/{upload_id}").status_code == 404 for upload_id in ids)
        assert [info.key for info in store.list("uploads/")] == []  # parts, sessions and their folders: gone
        assert not (local_store / "uploads" / "parts").exists() or not any((local_store / "uploads" / "parts").iterdir())
        assert http.get(api.url + "/readyz").status_code == 200


def test_abort_and_completion_delete_in_batches_on_s3(s3_settings: Any) -> None:
    store = open_store(settings=s3_settings)
    single_deletes: list[str] = []
    delete = store.delete

    def counted(key: str) -> None:
        single_deletes.append(key)
        delete(key)

    store.delete = counted  # type: ignore[method-assign]  # parts must go in batches, never one by one
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: store.put_bytes(f"many/{n:05d}", b"x"), range(1100)))
    store.put_bytes("many-others/keep", b"k")
    assert store.delete_prefix("many/") == 1100  # two DeleteObjects requests (1000 + 100)
    assert [info.key for info in store.list("many")] == ["many-others/keep"]

    uploads = Uploads(store, 4096, max_chunks=2**31)
    data = os.urandom(3000)
    session = uploads.begin("s3", "a.fits", TIB, sha(data), "ada", chunk=1024).session
    for offset in (0, 1024):
        uploads.put_chunk(session.id, offset, data[offset:offset + 1024], sha(data[offset:offset + 1024]))
    assert len(list(store.list("uploads/parts/"))) == 2
    cleanup = uploads.abort(session.id)
    assert uploads.in_progress() == []  # forgotten at once; the parts go with the cleanup
    assert cleanup() == 2 and list(store.list("uploads/")) == []
    small = uploads.begin("s3", "b.fits", len(data), sha(data), "ada", chunk=1024).session
    for offset in range(0, len(data), 1024):
        uploads.put_chunk(small.id, offset, data[offset:offset + 1024], sha(data[offset:offset + 1024]))
    assert uploads.complete(small.id).status == "complete"
    assert store.get_bytes("archive/s3/b.fits") == data and list(store.list("uploads/parts/")) == []
    assert sorted(single_deletes) == sorted(f"uploads/sessions/{s.id}.json" for s in (session, small))  # documents only


def test_idle_and_interrupted_uploads_expire_with_their_parts(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    uploads = Uploads(store, 4096)
    piece = os.urandom(1024)

    def started(path: str) -> str:
        session = uploads.begin("exp", path, 4096, sha(path.encode()), "ada", chunk=1024).session
        uploads.put_chunk(session.id, 0, piece, sha(piece))
        return session.id

    idle, active, interrupted = started("idle.fits"), started("active.fits"), started("cut.fits")
    document = json.loads(store.get_bytes(f"uploads/sessions/{idle}.json"))
    store.put_bytes(f"uploads/sessions/{idle}.json", json.dumps({**document, "updated": "2020-01-01T00:00:00+00:00"}).encode())
    uploads.abort(interrupted)  # the API restarted before the cleanup it handed back ran
    store.put_bytes("uploads/parts/" + "f" * 32 + "/0123456789abcdef/00000000", piece)  # no session owns these
    assert uploads.expire(max_age=3600) == {"expired": 1, "aborted": 1, "orphaned": 1}
    assert sorted({info.key.split("/")[2] for info in store.list("uploads/")}) == sorted({f"{active}.json", active})
    assert uploads.get(active).session.received == 1024


# -- 3 and 6. safe parsing: alias bombs, depth, malformed bodies ---------------------------------------

def laughs(levels: int) -> str:
    """A valid experiment manifest with the classic alias bomb as an extra top-level field (extra
    fields are kept, so before it was stored, expanded, as manifest.json)."""
    bomb = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    bomb += [f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]" for i in range(1, levels)]
    return yaml.safe_dump(manifest("laughs")) + "lol:\n" + "".join(f"  {line}\n" for line in bomb)


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(client: TestClient) -> None:
    headers = {**auth("admin"), "Content-Type": "application/yaml"}
    small = client.post(f"{V1}/experiments", content=laughs(6), headers=headers)  # 9**6 = 531,441 strings
    assert small.status_code == 413, small.text[:300]
    assert "more than 50000 values (aliases expanded): refused before building it" in small.json()["detail"]
    bomb = laughs(9)  # 9**9 = 387,420,489 strings, 400 MB as JSON; the red team's was 581 bytes
    assert len(bomb.split("lol:\n", 1)[1]) < 700
    tracemalloc.start()
    try:
        refused = client.post(f"{V1}/experiments", content=bomb, headers=headers)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert refused.status_code == 413 and "refused before building it" in refused.json()["detail"]
    assert peak < 50 * 1024**2, f"{peak} bytes traced: the expansion was built"
    assert client.get(f"{V1}/experiments/laughs", headers=auth("admin")).status_code == 404
    # the parser used by the API is the one the command line shares
    from oraculum.safe_parse import DocumentError, load_yaml

    with pytest.raises(DocumentError, match="refused before building it"):
        load_yaml(bomb, "a file")
    anchors = "base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\nwhen: 2024-05-01\n"  # ordinary anchors and merges stay fine
    assert load_yaml(anchors) == {"base": {"x": 1}, "d": {"x": 1, "y": 2}, "when": "2024-05-01"}


DEEP_JSON = b'{"a":' * 1000 + b"1" + b"}" * 1000
DEEP_YAML = "".join(" " * i + f"k{i}:\n" for i in range(1000)) + " " * 1000 + "v: 1\n"
EXPERIMENTS = f"{V1}/experiments"
LABEL = f"{I1}/labels/{IDX}"

MALFORMED: list[tuple[str, str, bytes, str, str]] = [
    # (method, path, body, content type, what the message must name)
    ("PUT", LABEL, b'{"label": "emission", "comment": "\\ud800"}', "application/json", "comment: the text has a lone UTF-16 surrogate"),
    ("PUT", LABEL, b'{"label": "emission", "comment": NaN}', "application/json", "comment: nan is not a number"),
    ("PUT", LABEL, b'{"label": "emission", "comment": Infinity}', "application/json", "comment: inf is not a number"),
    ("PUT", LABEL, b'{"label": NaN}', "", "valid dictionary"),  # no Content-Type: not parsed as JSON at all
    ("POST", f"{I1}/labels/bulk", b'{"indices": [55, NaN], "label": "unsure"}', "application/json", "indices[1]: nan"),
    ("PUT", LABEL, b'{"label": "emission", "comment": "\xed\xa0\x80"}', "application/json", "not UTF-8"),
    ("PUT", LABEL, DEEP_JSON, "application/json", "nested more than"),
    ("POST", EXPERIMENTS, b'{"apiVersion": "oraculum.dev/v1alpha1", "kind": {}}', "application/json", "kind must be text"),
    ("POST", EXPERIMENTS, b"apiVersion: oraculum.dev/v1alpha1\nkind: {}\n", "application/yaml", "kind must be text"),
    ("POST", EXPERIMENTS, b'{"apiVersion": 1, "kind": "ActiveLearningExperiment"}', "application/json", "apiVersion must be text"),
    ("POST", EXPERIMENTS, b'{"apiVersion": "oraculum.dev/v1alpha1", "kind": "ActiveLearningExperiment", "spec": []}',
     "application/json", "spec must be a mapping"),
    ("POST", EXPERIMENTS, DEEP_JSON, "application/json", "nested more than 64 levels"),
    ("POST", EXPERIMENTS, DEEP_YAML.encode(), "application/yaml", "nested more than 64 levels"),
    ("POST", EXPERIMENTS, b"a: " + b"[" * 1000 + b"]" * 1000, "application/yaml", "nesting depth"),
    ("POST", EXPERIMENTS, b'{"kind": "ActiveLearningExperiment", "x": "\\udc00"}', "application/json", "x: the text has a lone"),
    ("POST", EXPERIMENTS, b"kind: ActiveLearningExperiment\nx: .nan\n", "application/yaml", "x: nan is not a number"),
    ("POST", EXPERIMENTS, b"kind: ActiveLearningExperiment\nx: !!binary aGVsbG8=\n", "application/yaml", "x: binary data"),
    ("POST", EXPERIMENTS, b"kind: ActiveLearningExperiment\nx: &r [*r]\n", "application/yaml", "recursive aliases"),
    ("POST", EXPERIMENTS, b"x: 1" + b"0" * 5000 + b"\n", "application/yaml", "digits"),
    ("POST", EXPERIMENTS, b'{"x": 1' + b"0" * 5000 + b"}", "application/json", "digits"),
    ("POST", EXPERIMENTS, b"kind: ActiveLearningExperiment\n---\nkind: PreprocessingJob\n", "application/yaml", "exactly one"),
    ("POST", f"{V1}/uws/preprocessing", b"MANIFEST=kind%3A+%7B%7D", "application/x-www-form-urlencoded", "kind must be text"),
    ("POST", f"{V1}/uws/preprocessing", DEEP_YAML.encode(), "application/yaml", "nested more than 64 levels"),
]


@pytest.mark.parametrize(("method", "path", "body", "content_type", "named"), MALFORMED,
                         ids=[f"{m} {p.rsplit('/', 2)[-2:]} {n}" for m, p, _, _, n in MALFORMED])
def test_malformed_bodies_are_4xx_naming_the_problem(client: TestClient, method: str, path: str, body: bytes,
                                                     content_type: str, named: str) -> None:
    headers = {**auth("admin"), **({"Content-Type": content_type} if content_type else {})}
    response = client.request(method, path, content=body, headers=headers)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    assert named in json.dumps(response.json()["detail"], ensure_ascii=False), response.text[:500]


def test_a_validation_error_echoing_nan_is_still_a_422(client: TestClient) -> None:
    """FastAPI's own 422 echoes the refused input; NaN there made the answer itself fail (500)."""
    from oraculum.api.bodies import json_safe

    assert json_safe({"input": float("nan"), "s": "\ud800", "l": [float("-inf")]}) == \
        {"input": "nan", "s": "\\ud800", "l": ["-inf"]}
    response = client.post(f"{I1}/labels/bulk", json={"indices": "x", "label": "unsure"}, headers=auth("oracle"))
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "indices"]


# -- 7. gateway limits -----------------------------------------------------------------------------------

def test_expensive_endpoints_are_rate_limited_per_token(local_store: Path) -> None:
    settings = settings_for(local_store, api_rate_limits="logs=0.01/3,exports=0.01/1")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        logs = f"{I1}/labels/events"
        assert [client.get(logs, headers=auth("viewer")).status_code for _ in range(3)] == [200] * 3
        refused = client.get(logs, headers=auth("viewer"))
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 60, refused.text
        assert "vera" in refused.json()["detail"] and "logs" in refused.json()["detail"]
        assert client.get(logs, headers=auth("oracle")).status_code == 200  # another token: its own bucket
        assert client.get(f"{V1}/experiments/{EXPERIMENT}/batch", headers=auth("viewer")).status_code == 200  # not limited
        csv = f"{I1}/candidates.csv"
        assert [client.get(csv, headers=auth("viewer")).status_code for _ in range(2)] == [200, 429]
        assert client.get(f"{V1}/whoami", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert client.get(logs, headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert 'oraculum_api_rate_limited_total{kind="logs"} 1.0' in client.get("/metrics").text
        documented = client.get("/openapi.json").json()["paths"][f"{V1}/experiments/{{name}}/iterations/{{iteration}}/labels/events"]
        assert "429" in documented["get"]["responses"]
    with pytest.raises(ValueError, match="unknown kind 'everything'"):
        create_app(settings_for(local_store, api_rate_limits="everything=1/1"))


def test_rate_limits_are_shared_by_replicas_through_redis(local_store: Path, redis_server: Any) -> None:
    settings = settings_for(local_store, api_rate_limits="maps=0.01/2", redis_url=redis_server.url)
    redis_server.flushall()
    path = f"{I1}/map"
    with TestClient(create_app(settings), raise_server_exceptions=False) as one, \
            TestClient(create_app(settings), raise_server_exceptions=False) as two:
        assert one.get(path, headers=auth("viewer")).status_code == 200
        assert two.get(path, headers=auth("viewer")).status_code == 200
        assert one.get(path, headers=auth("viewer")).status_code == 429
        assert two.get(path, headers=auth("viewer")).status_code == 429
        assert two.get(path, headers=auth("oracle")).status_code == 200
        redis_server.kill()  # Redis gone: a limit is not worth an outage
        try:
            assert one.get(path, headers=auth("viewer")).status_code == 200
        finally:
            redis_server.start()


def test_one_kind_of_work_cannot_take_the_threads_of_the_rest(local_store: Path) -> None:
    """40 upload listings stuck in the store (more than the old shared pool's 16 threads) leave
    /readyz, batch reads and label writes their own threads."""
    store = LocalStore(local_store)
    release = threading.Event()
    stuck = 0
    listing = store.list

    def slow_list(prefix: str = "") -> Iterator[Any]:
        nonlocal stuck
        if prefix.startswith("uploads/"):
            stuck += 1
            release.wait(30)
        return listing(prefix)

    store.list = slow_list  # type: ignore[method-assign]
    app = create_app(settings_for(local_store), store=store)

    async def scenario() -> None:
        async with client_for(app) as http:
            blocked = [asyncio.create_task(http.get(f"{V1}/uploads", headers=auth("admin"))) for _ in range(40)]
            for _ in range(200):
                if stuck >= 4:
                    break
                await asyncio.sleep(0.05)
            try:
                assert stuck == 4  # the uploads' own pool is full; the rest wait in its queue
                ready = await asyncio.wait_for(http.get("/readyz"), 20)
                batch = await asyncio.wait_for(http.get(f"{V1}/experiments/{EXPERIMENT}/batch", headers=auth("viewer")), 20)
                label = await asyncio.wait_for(http.put(f"{I1}/labels/{IDX}", json={"label": "emission"},
                                                        headers=auth("oracle")), 20)
                assert (ready.status_code, batch.status_code, label.status_code) == (200, 200, 201)
                assert not any(task.done() for task in blocked)
            finally:
                release.set()
            assert {(await task).status_code for task in blocked} == {200}

    asyncio.run(scenario())


def _read_until_closed(sock: socket.socket, deadline: float) -> bytes:
    """What the server sends until it closes the connection, or ``<still open>`` at ``deadline``
    (a ``time.monotonic()``)."""
    received = b""
    try:
        while True:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            chunk = sock.recv(4096)
            if not chunk:
                return received
            received += chunk
    except TimeoutError:
        return received + b"<still open>"


def test_slow_clients_are_cut_off_and_headers_bounded(tmp_path: Path) -> None:
    env = local_env(tmp_path / "store", ORACULUM_API_HEADER_TIMEOUT="1", ORACULUM_API_MAX_HEADER_BYTES="8192")
    with running_api(env, tmp_path / "api.log") as api:
        half_sent = []
        for _ in range(50):
            sock = socket.create_connection(("127.0.0.1", api.port))
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            half_sent.append(sock)
        silent = socket.create_connection(("127.0.0.1", api.port))  # connects and says nothing
        assert httpx.get(api.url + "/healthz", timeout=10).status_code == 200
        deadline = time.monotonic() + 15
        answers = [_read_until_closed(sock, deadline) for sock in [*half_sent, silent]]
        for sock in [*half_sent, silent]:
            sock.close()
        assert all(answer.startswith(b"HTTP/1.1 408") and answer.endswith(b"1 s") for answer in answers), answers[0]
        with socket.create_connection(("127.0.0.1", api.port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20_000 + b"\r\n\r\n")
            assert _read_until_closed(sock, time.monotonic() + 15).startswith(b"HTTP/1.1 431")
        with socket.create_connection(("127.0.0.1", api.port)) as sock:  # a kept-alive connection, then silence
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n")
            answer = _read_until_closed(sock, time.monotonic() + 15)
            assert answer.startswith(b"HTTP/1.1 200") and b"HTTP/1.1 408" in answer
        assert httpx.get(api.url + "/healthz", timeout=10).status_code == 200


def gzip_bomb(size: int = 500 * 1024**2) -> bytes:
    """``size`` zero bytes as a gzip stream of 16 MiB members (about 500 kB for 500 MiB)."""
    member = zlib.compressobj(9, zlib.DEFLATED, 31)
    one = member.compress(bytes(16 * 1024**2)) + member.flush()
    count, rest = divmod(size, 16 * 1024**2)
    tail = zlib.compressobj(9, zlib.DEFLATED, 31)
    return one * count + (tail.compress(bytes(rest)) + tail.flush() if rest else b"")


def test_a_gzip_bomb_is_refused_with_the_reason(client: TestClient, local_store: Path) -> None:
    bomb = gzip_bomb()
    assert len(bomb) < 600_000
    with pytest.raises(SpectrumRejected, match="decompresses to more than 67108864 bytes"):
        read_spectrum(bomb, "bomb.fits.gz")
    raw = f"{V1}/datasets/pool/spectra/3/raw"
    first = client.get(raw, headers=auth("viewer"))
    assert first.status_code == 200, first.text[:300]
    key = first.json()["source_key"]
    [path] = [p for p in local_store.rglob(Path(key).name) if p.as_posix().endswith(key)]
    path.write_bytes(bomb)
    refused = client.get(raw, headers=auth("viewer"))
    assert refused.status_code == 422 and "decompresses to more than 67108864 bytes" in refused.json()["detail"], refused.text


def test_store_prefix_deletion_on_a_local_store(tmp_path: Path) -> None:
    store: ObjectStore = LocalStore(tmp_path)
    for key in ("a/b/1", "a/b/c/2", "a/bb/3", "z"):
        store.put_bytes(key, b"x")
    assert store.delete_prefix("a/b/") == 2
    assert [info.key for info in store.list()] == ["a/bb/3", "z"] and not (tmp_path / "a" / "b").exists()
    with pytest.raises(ValueError, match="needs a prefix"):
        store.delete_prefix("")
