"""Security of the API: the whole role x endpoint matrix, tokens, path traversal, body limits, and a
property-based fuzz run (schemathesis, against the app's own OpenAPI schema) that finds no 5xx."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.support.api_fixtures import NAMES, TOKENS, auth, settings_for
from tests.support.api_world import EXPERIMENT, manifest, ppj_manifest
from oraculum.api.app import create_app
from oraculum.api.auth import AuthConfigError, TokenTable, parse_token_file, parse_token_list
from oraculum.settings import Settings

V1 = "/api/v1"
E = f"{V1}/experiments/{EXPERIMENT}"
I1 = f"{E}/iterations/1"
D = f"{V1}/datasets/pool"
IDX = 55  # an oracle item of iteration 1's batch (see api_world)

# (method, path, json body, role needed). Writes that would change the world use names that do
# not exist (a 404 for an allowed role is fine: the matrix is about 401/403).
MATRIX: list[tuple[str, str, Any, str]] = [
    ("GET", f"{V1}/whoami", None, "any"),
    ("GET", f"{V1}/experiments", None, "viewer"),
    ("POST", f"{V1}/experiments", manifest("matrix"), "admin"),
    ("GET", E, None, "viewer"),
    ("POST", f"{V1}/experiments/ghost/suspend", None, "admin"),
    ("POST", f"{V1}/experiments/ghost/resume", None, "admin"),
    ("DELETE", f"{V1}/experiments/ghost", None, "admin"),
    ("POST", f"{E}/progress", {"job": "exp-iter-1", "done": 1, "total": 2}, "worker"),
    ("GET", f"{E}/progress", None, "viewer"),
    ("GET", f"{E}/batch", None, "viewer"),
    ("GET", f"{E}/iterations", None, "viewer"),
    ("GET", f"{I1}/batch", None, "viewer"),
    ("GET", f"{I1}/map", None, "viewer"),
    ("GET", f"{I1}/progress", None, "viewer"),
    ("GET", f"{I1}/labels", None, "viewer"),
    ("GET", f"{I1}/labels/events", None, "viewer"),
    ("PUT", f"{I1}/labels/{IDX}", {"label": "emission"}, "oracle"),
    ("DELETE", f"{I1}/labels/{IDX}", None, "oracle"),
    ("POST", f"{I1}/labels/bulk", {"indices": [IDX], "label": "unsure"}, "oracle"),
    ("GET", f"{I1}/locks", None, "viewer"),
    ("POST", f"{I1}/locks/{IDX}", None, "oracle"),
    ("DELETE", f"{I1}/locks/{IDX}", None, "oracle"),
    ("POST", f"{I1}/submit", None, "oracle"),
    ("GET", f"{E}/iterations/0/metrics", None, "viewer"),
    ("GET", f"{E}/curves", None, "viewer"),
    ("GET", f"{I1}/candidates.csv", None, "viewer"),
    ("GET", f"{I1}/candidates.vot", None, "viewer"),
    ("GET", f"{E}/events?max_events=2&timeout=1", None, "viewer"),
    ("GET", f"{V1}/preprocessingjobs", None, "viewer"),
    ("POST", f"{V1}/preprocessingjobs", ppj_manifest("matrix-ppj"), "admin"),
    ("GET", f"{V1}/preprocessingjobs/ghost", None, "viewer"),
    ("POST", f"{V1}/preprocessingjobs/ghost/suspend", None, "admin"),
    ("POST", f"{V1}/preprocessingjobs/ghost/resume", None, "admin"),
    ("DELETE", f"{V1}/preprocessingjobs/ghost", None, "admin"),
    ("POST", f"{V1}/preprocessingjobs/ghost/progress", {"job": "ghost-preprocess"}, "worker"),
    ("GET", f"{V1}/preprocessingjobs/ghost/progress", None, "viewer"),
    ("GET", f"{V1}/datasets", None, "viewer"),
    ("GET", D, None, "viewer"),
    ("GET", f"{D}/rejected", None, "viewer"),
    ("GET", f"{D}/spectra/3", None, "viewer"),
    ("GET", f"{D}/spectra/3/flux", None, "viewer"),
    ("GET", f"{D}/spectra/3/raw?max_points=100", None, "viewer"),
    # signed links for SAMP tools (api/routers/share.py): a viewer asks; the link itself needs its signature
    ("GET", f"{D}/spectra/3/share", None, "viewer"),
    ("GET", f"{I1}/candidates/share", None, "viewer"),
    ("GET", f"{V1}/shared/spectra/pool/3/preprocessed.fits", None, "signed"),
    ("GET", f"{V1}/shared/experiments/{EXPERIMENT}/iterations/1/candidates.vot", None, "signed"),
    ("POST", f"{V1}/uploads", {"prefix": "matrix", "path": "a.fits", "size": 1, "sha256": "0" * 64}, "admin"),
    ("GET", f"{V1}/uploads", None, "admin"),
    ("GET", f"{V1}/uploads/{'0' * 32}", None, "admin"),
    ("PUT", f"{V1}/uploads/{'0' * 32}/chunks?offset=0", None, "admin"),
    ("POST", f"{V1}/uploads/{'0' * 32}/complete", None, "admin"),
    ("DELETE", f"{V1}/uploads/{'0' * 32}", None, "admin"),
    # the UWS facade (docs/uws.md): both job lists, and every route of a job of each
    ("GET", f"{V1}/uws/preprocessing", None, "viewer"),
    ("POST", f"{V1}/uws/preprocessing", None, "admin"),
    ("GET", f"{V1}/uws/iterations", None, "viewer"),
    ("POST", f"{V1}/uws/iterations", None, "admin"),
    *[(method, f"{V1}/uws/{job}{sub}", None, role) for job in ("preprocessing/ghost", f"iterations/{EXPERIMENT}/1")
      for method, sub, role in (("GET", "", "viewer"), ("POST", "", "admin"), ("DELETE", "", "admin"),
                                ("GET", "/phase", "viewer"), ("POST", "/phase", "admin"),
                                ("GET", "/executionduration", "viewer"), ("POST", "/executionduration", "admin"),
                                ("GET", "/destruction", "viewer"), ("POST", "/destruction", "admin"),
                                ("GET", "/error", "viewer"), ("GET", "/quote", "viewer"), ("GET", "/parameters", "viewer"),
                                ("GET", "/results", "viewer"), ("GET", "/results/batch", "viewer"),
                                ("GET", "/owner", "viewer"))],
]
ROLE_OF = {"viewer": "viewer", "oracle": "oracle", "admin": "admin", "worker": "worker"}
ALLOWED = {
    "any": {"viewer", "oracle", "admin", "worker"},
    "viewer": {"viewer", "oracle", "admin"},
    "oracle": {"oracle", "admin"},
    "admin": {"admin"},
    "worker": {"worker", "admin"},
}


@pytest.fixture(scope="module")
def client(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:  # noqa: F811
    store = tmp_path_factory.mktemp("security") / "store"
    shutil.copytree(world, store)
    with TestClient(create_app(settings_for(store, api_max_body_bytes=64 * 1024)), raise_server_exceptions=False) as test_client:
        yield test_client


def test_the_matrix_covers_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operations = {(method.upper(), path) for path, item in schema["paths"].items() for method in item
                  if path.startswith(V1)}
    covered = set()
    for method, path, _, _ in MATRIX:
        concrete = path.split("?")[0]
        for op_method, template in operations:
            parts, concrete_parts = template.split("/"), concrete.split("/")
            if op_method == method and len(parts) == len(concrete_parts) and all(
                    p == c or p.startswith("{") for p, c in zip(parts, concrete_parts, strict=True)):
                covered.add((op_method, template))
    assert operations - covered == set()


@pytest.mark.parametrize("who", [None, "viewer", "oracle", "admin", "worker"])
@pytest.mark.parametrize(("method", "path", "body", "needed"), MATRIX, ids=[f"{m} {p}" for m, p, _, _ in MATRIX])
def test_role_matrix(client: TestClient, method: str, path: str, body: Any, needed: str, who: str | None) -> None:
    headers = auth(who) if who else {}
    response = client.request(method, path, json=body, headers=headers)
    if needed == "signed":  # no token opens a signed link's route without its signature, not even admin's
        assert response.status_code == 403 and "signed link" in response.json()["detail"], response.text
    elif who is None:
        assert response.status_code == 401 and response.headers["www-authenticate"].startswith("Bearer")
    elif ROLE_OF[who] in ALLOWED[needed]:
        assert response.status_code not in (401, 403), response.text
        assert response.status_code < 500, response.text
    else:
        assert response.status_code == 403, response.text
        assert NAMES[who] in response.json()["detail"]


@pytest.mark.parametrize("header", ["", "Bearer", "Bearer ", "Basic dXNlcjpwYXNz", "Bearer wrong-token-0123456789abcdef",
                                    f"Bearer {TOKENS['admin']}x", f"Token {TOKENS['admin']}"])
def test_bad_credentials_are_401(client: TestClient, header: str) -> None:
    response = client.get(f"{V1}/experiments", headers={"Authorization": header} if header else {})
    assert response.status_code == 401


def test_probes_need_no_token_but_data_does(client: TestClient) -> None:
    assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
    assert client.get(f"{V1}/datasets").status_code == 401


TRAVERSAL = [
    f"{V1}/experiments/..", f"{V1}/experiments/%2e%2e", f"{V1}/experiments/..%2f..%2fetc",
    f"{V1}/experiments/exp%2f..%2f..%2flocal", f"{V1}/experiments/..%5c..%5cetc", f"{V1}/experiments/.exp",
    f"{V1}/experiments/EXP", f"{V1}/experiments/a..b/batch", f"{V1}/experiments/{'a' * 64}",
    f"{V1}/experiments/exp%00/batch", f"{E}/iterations/-1/batch", f"{E}/iterations/1e3/batch",
    f"{E}/iterations/..%2f..%2f..%2fdatasets/batch", f"{E}/iterations/999999999/batch",
    f"{V1}/datasets/..", f"{V1}/datasets/..%2f..%2fetc%2fpasswd", f"{V1}/datasets/pool/spectra/-1",
    f"{V1}/datasets/pool/spectra/..%2f1/raw", f"{V1}/datasets/%2fetc/spectra/1/raw", f"{V1}/datasets/pool/spectra/1.5/flux",
    f"{V1}/datasets/pool/spectra/99999999999999999999/flux", f"{I1}/labels/..%2f..",
    f"{V1}/uploads/..%2f..%2fetc", f"{V1}/uploads/{'0' * 31}%2f", f"{V1}/uploads?prefix=..%2f..%2fetc",
    f"{V1}/uploads?prefix=%2fetc",
]


@pytest.mark.parametrize("path", TRAVERSAL)
def test_path_traversal_and_bad_ids_are_4xx(client: TestClient, path: str) -> None:
    response = client.get(path, headers=auth("admin"))
    assert 400 <= response.status_code < 500, (path, response.status_code, response.text)


@pytest.mark.parametrize("name", ["../evil", "a/b", "..", "Evil", "evil..", "-x", "x" * 70, "exp\x00"])
def test_manifest_names_cannot_be_paths(client: TestClient, name: str) -> None:
    response = client.post(f"{V1}/experiments", json=manifest(name), headers=auth("admin"))
    assert response.status_code == 422


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = {"label": "emission", "comment": "x" * (100 * 1024)}
    assert client.put(f"{I1}/labels/{IDX}", json=big, headers=auth("oracle")).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: a chunked body, counted as it arrives
        yield b'{"label": "emission", "comment": "'
        for _ in range(100):
            yield b"y" * 1024
        yield b'"}'

    response = client.put(f"{I1}/labels/{IDX}", content=chunks(), headers={**auth("oracle"), "Content-Type": "application/json"})
    assert response.status_code == 413
    large = "a: [" + ",".join(["x"] * 40000) + "]\n"
    response = client.post(f"{V1}/experiments", content=large, headers={**auth("admin"), "Content-Type": "application/yaml"})
    assert response.status_code == 413
    # a small "billion laughs": refused as too large before the aliases are expanded (tests/api/test_hardening.py)
    laughs = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{','.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
    response = client.post(f"{V1}/experiments", content=laughs, headers={**auth("admin"), "Content-Type": "application/yaml"})
    assert response.status_code == 413
    many = client.post(f"{I1}/labels/bulk", json={"indices": list(range(20_000)), "label": "unsure"}, headers=auth("oracle"))
    assert many.status_code in (413, 422)


def test_malformed_bodies_are_422(client: TestClient) -> None:
    for body in (b"{", b"[]", b"null", b'{"label": 5}', b'{"label": ""}', b"\xff\xfe"):
        response = client.put(f"{I1}/labels/{IDX}", content=body, headers={**auth("oracle"), "Content-Type": "application/json"})
        assert response.status_code == 422, body
    for body in (b"{", b"[]", b"\xff", b'{"apiVersion": "v1"}', b'{"apiVersion": "oraculum.dev/v1alpha1", "kind": "Pod"}'):
        response = client.post(f"{V1}/experiments", content=body, headers={**auth("admin"), "Content-Type": "application/json"})
        assert response.status_code == 422, body


def test_token_configuration(tmp_path: Path) -> None:
    assert [e.role for e in parse_token_list("a:viewer:aaaaaaaaaaaaaaaa1, b:admin:bbbb:bbbbbbbbbbbbbb")] == ["viewer", "admin"]
    with pytest.raises(AuthConfigError, match="name:role:token"):
        parse_token_list("nobody")
    with pytest.raises(AuthConfigError, match="role"):
        parse_token_list("a:root:aaaaaaaaaaaaaaaa1")
    with pytest.raises(AuthConfigError, match="token"):
        parse_token_list("a:viewer:short")
    secret = tmp_path / "tokens.yaml"
    secret.write_text("- {name: ada, role: admin, token: ada-token-0123456789}\n- {name: vera, role: viewer, token: vera-token-0123456789}\n")
    table = TokenTable.from_settings(Settings(auth_file=str(secret), api_tokens="job:worker:job-token-0123456789"))
    assert table.lookup("ada-token-0123456789").role == "admin"  # type: ignore[union-attr]
    assert table.lookup("job-token-0123456789").role == "worker"  # type: ignore[union-attr]
    assert table.lookup("ada-token-012345678") is None and table.lookup("") is None
    assert len(parse_token_file('{"tokens": [{"name": "x", "role": "oracle", "token": "xxxxxxxxxxxxxxxxxxxx"}]}', "t")) == 1
    with pytest.raises(AuthConfigError, match="the same"):
        TokenTable.from_settings(Settings(api_tokens="a:viewer:same-token-0123456789,b:admin:same-token-0123456789"))
    # a rotated Secret is picked up without a restart
    import os
    import time

    secret.write_text("- {name: ada, role: admin, token: rotated-token-0123456789}\n")
    os.utime(secret, (time.time() + 5, time.time() + 5))
    table._checked -= 10
    assert table.lookup("rotated-token-0123456789").name == "ada"  # type: ignore[union-attr]
    assert table.lookup("ada-token-0123456789") is None


def test_fuzz_finds_no_server_error(world: Path, tmp_path: Path) -> None:  # noqa: F811
    """schemathesis generates requests from the OpenAPI schema (a few per operation, bounded
    time) with an admin token: whatever it sends, the answer is never a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings

    store = tmp_path / "store"
    shutil.copytree(world, store)
    app = create_app(settings_for(store))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    calls = 0
    codes: set[int] = set()
    with TestClient(app):  # the lifespan (state) for the whole run
        for result in schema.get_all_operations():
            operation = result.ok()
            if operation.path.endswith("/events"):
                continue  # a stream: covered by the functional tests

            @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                      phases=[Phase.explicit, Phase.generate],
                      suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def run(case: Any) -> None:
                nonlocal calls
                calls += 1
                response = case.call(headers=auth("admin"))
                codes.add(response.status_code)
                if response.status_code >= 500:
                    failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: {response.text[:200]}")

            run()
    assert calls > 150 and {200, 404, 422} <= codes, codes
    assert not failures, "\n".join(failures[:20])
