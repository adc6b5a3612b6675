"""The dashboard's server side without a browser: key maps, line markers in air and vacuum, the
login cookie, the authenticated proxy and its CSRF guard, prefixes and safe redirects, the API's
error messages, and the candidate downloads (CSV parsed, VOTable written and read back). The API
is a stand-in (httpx.MockTransport) here; tests/dashboard/test_dashboard.py runs the real one in Chromium."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import numpy as np
import pytest

from oraculum.dashboard.app import _safe_next, _sse_messages, create_app, query, relative
from oraculum.dashboard.client import ApiClient, ApiError, error_message
from oraculum.dashboard.config import DashboardSettings
from oraculum.dashboard.context import COOKIE, Context
from oraculum.dashboard.labelling import keymap
from oraculum.dashboard.performance import parse_csv, votable_bytes
from oraculum.dashboard.spectra import Neighbours, line_markers
from oraculum.spectra.wavelength import LINES_VACUUM_A, vacuum_to_air

TOKEN = "oracle-token-0123456789abcdef"


def fake_api(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"detail": "invalid token"})
        if request.url.path == "/api/v1/whoami":
            return httpx.Response(200, json={"name": "olga", "role": "oracle"})
        if request.url.path.endswith("/labels/7") and request.method == "PUT":
            return httpx.Response(409, json={"detail": {"message": "1 item(s) are being labelled by someone else right now",
                                                        "holders": {"7": "otto"}}})
        return httpx.Response(200, json={"path": request.url.path, "body": request.content.decode() or None})

    return httpx.MockTransport(handle)


@pytest.fixture
def app_and_calls() -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    settings = DashboardSettings(api_url="http://api.test", root_path="/oraculum")
    app = create_app(settings, ApiClient(settings.api_url, transport=fake_api(seen)))
    return app, seen


def test_keymap_uses_the_class_hotkeys_then_digits_and_u_for_unsure() -> None:
    classes = [{"name": "absorption", "hotkey": "1"}, {"name": "emission"}, {"name": "double-peak", "hotkey": "d"}]
    assert keymap(classes) == {"1": "absorption", "2": "emission", "d": "double-peak", "u": "unsure"}


def test_line_markers_follow_air_and_vacuum() -> None:
    markers = line_markers()
    vacuum = {line["name"]: line["x"] for line in markers["lines_vacuum"]}
    air = {line["name"]: line["x"] for line in markers["lines_air"]}
    assert set(vacuum) == {"H-alpha", "[N II] 6548", "[N II] 6583", "He I 6678"}
    for name, value in LINES_VACUUM_A.items():
        assert vacuum[name] == pytest.approx(value, abs=1e-3)
        assert air[name] == pytest.approx(float(vacuum_to_air(value)), abs=1e-3)
    assert air["H-alpha"] == pytest.approx(6562.80, abs=0.02)  # the textbook air wavelength


def test_prefix_paths_and_safe_redirects() -> None:
    ctx = Context(DashboardSettings(root_path="/oraculum/"), ApiClient("http://api.test"))
    assert ctx.prefix == "/oraculum/" and ctx.href("e/x/label") == "/oraculum/e/x/label"
    assert relative(ctx, "/oraculum/e/be-stars/map") == ["e", "be-stars", "map"]
    assert relative(ctx, "/oraculum") == []
    assert _safe_next(ctx, "/oraculum/e/x/label?item=3") == "/oraculum/e/x/label?item=3"
    for hostile in ("https://evil.example/", "//evil.example/oraculum/", "/elsewhere", None, ""):
        assert _safe_next(ctx, hostile) == "/oraculum/"
    assert Context(DashboardSettings(root_path=""), ApiClient("http://api.test")).prefix == "/"


def test_location_search_is_decoded_once() -> None:
    # the login page's ?next= holds a whole quoted address, query string and all
    assert query("?next=%2Foraculum%2Fe%2Fx%2Flabel%3Fitem%3D3&error=That%20token%20is%20not%20valid.") == {
        "next": "/oraculum/e/x/label?item=3", "error": "That token is not valid."}
    assert query("?item=12") == {"item": "12"}
    assert query(None) == {} and query("") == {} and query("?") == {}


def test_event_stream_messages_are_parsed_with_comments_and_odd_data() -> None:
    lines = [": keepalive", "event: progress", 'data: {"fraction": 0.5}', "", "id: 3", "data: [1,", "data: 2]", "",
             "event: status", "data: not json", "", "data: {\"phase\": \"Training\"}", "", "event: lonely", ""]
    assert list(_sse_messages(iter(lines))) == [
        ("progress", {"fraction": 0.5}), ("message", {"value": [1, 2]}), ("status", {"text": "not json"}),
        ("message", {"phase": "Training"})]


def test_error_messages_of_the_api_are_shown_as_they_are() -> None:
    def response(detail: Any) -> httpx.Response:
        return httpx.Response(409, json={"detail": detail})

    assert error_message(response("iteration 1 is not the current one")) == "iteration 1 is not the current one"
    assert error_message(response({"message": "taken", "holders": {"7": "otto"}})) == "taken: #7 by otto"
    assert error_message(response([{"loc": ["body", "label"], "msg": "too long"}])) == "body.label: too long"
    assert str(ApiError(0, "the API cannot be reached")) == "the API cannot be reached"
    # what a gateway in front of the API answers (not JSON, or JSON without a detail)
    assert error_message(httpx.Response(502, text="<html>" + "x" * 400)) == ("<html>" + "x" * 400)[:300]
    assert error_message(httpx.Response(503, json=["busy"])) == '["busy"]'
    assert error_message(httpx.Response(504, json={"error": "timeout"})) == "Gateway Timeout"
    assert error_message(httpx.Response(500, content=b"")) == "Internal Server Error"


def test_probes_at_the_root_and_under_the_prefix(app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    app, _ = app_and_calls
    client = app.server.test_client()
    assert client.get("/healthz").json["status"] == "ok"
    assert client.get("/oraculum/healthz").status_code == 200
    assert client.get("/oraculum/").status_code == 200
    assert client.get("/").status_code == 404


def test_login_sets_a_strict_http_only_cookie_and_refuses_a_bad_token(app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    app, _ = app_and_calls
    client = app.server.test_client()
    bad = client.post("/oraculum/_oraculum/login", data={"token": "nope-nope-nope-nope", "next": "/oraculum/"})
    assert bad.status_code == 303 and "/oraculum/login?error=" in bad.headers["Location"]
    assert COOKIE not in bad.headers.get("Set-Cookie", "")
    good = client.post("/oraculum/_oraculum/login", data={"token": TOKEN, "next": "https://evil.example/"},
                       headers={"X-Forwarded-Proto": "https"})
    assert good.status_code == 303 and good.headers["Location"] == "/oraculum/"
    cookie = good.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "Secure" in cookie and "Path=/oraculum/" in cookie
    out = client.get("/oraculum/_oraculum/logout")
    assert out.status_code == 303 and f"{COOKIE}=;" in out.headers["Set-Cookie"]


def test_the_proxy_forwards_the_oracles_token_and_guards_writes(app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    app, seen = app_and_calls
    client = app.server.test_client()
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 401  # no cookie, no default token
    client.set_cookie(COOKIE, TOKEN, path="/oraculum/")
    assert client.get("/oraculum/_oraculum/api/v1/whoami").json == {"name": "olga", "role": "oracle"}
    assert seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    path = "/oraculum/_oraculum/api/v1/experiments/exp/iterations/1/labels/3"
    forged = client.put(path, json={"label": "emission"})
    assert forged.status_code == 403  # a cross-site form cannot add the header
    calls = len(seen)
    ok = client.put(path, json={"label": "emission"}, headers={"X-Oraculum-Request": "1"})
    assert ok.status_code == 200 and json.loads(ok.json["body"]) == {"label": "emission"} and len(seen) == calls + 1
    refused = client.put(path.replace("/3", "/7"), json={"label": "emission"}, headers={"X-Oraculum-Request": "1"})
    assert refused.status_code == 409 and refused.json["detail"]["holders"] == {"7": "otto"}


def test_the_proxy_says_when_the_api_is_down() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    settings = DashboardSettings(api_url="http://api.test", dashboard_token=TOKEN)
    app = create_app(settings, ApiClient(settings.api_url, transport=httpx.MockTransport(down)))
    answer = app.server.test_client().get("/_oraculum/api/v1/whoami")
    assert answer.status_code == 502 and "cannot be reached" in answer.json["detail"]


def test_candidates_csv_and_votable_round_trip() -> None:
    from astropy.io.votable import parse_single_table

    text = ("id,index,ra,dec,obsid,designation,snr,predicted,probability,label\n"
            "spec-1,12,37.5,11.9,1000000013,LAMOST J023000+115400,25.2,emission,0.93,\n"
            "spec-2,40,36.1,9.8,-1,,8.5,double-peak,0.61,double-peak\n")
    parsed = parse_csv(text)
    assert parsed["columns"][:3] == ["id", "index", "ra"] and len(parsed["rows"]) == 2
    assert parsed["rows"][0]["index"] == 12 and parsed["rows"][0]["probability"] == pytest.approx(0.93)
    table = parse_single_table(io.BytesIO(votable_bytes(parsed["rows"], parsed["columns"], "test"))).to_table()
    assert list(table["id"]) == ["spec-1", "spec-2"]
    assert np.allclose(np.asarray(table["probability"], dtype=float), [0.93, 0.61])
    empty = parse_csv("id,index,predicted\n")
    assert empty == {"columns": ["id", "index", "predicted"], "rows": []}
    assert parse_single_table(io.BytesIO(votable_bytes([], empty["columns"], "none"))).to_table().colnames == \
        ["id", "index", "predicted"]


def test_nearest_labelled_spectrum_of_each_class_skips_gaps() -> None:
    # a stand-in API (httpx.MockTransport) with two iterations of labels and flux with gaps (null)
    flux = {1: [1.0, None, 1.0], 2: [2.0, 2.0, None], 3: [1.1, 5.0, 0.9], 4: [3.0, 3.0, 3.0]}

    def handle(request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        if path == "/whoami":
            return httpx.Response(200, json={"name": "olga", "role": "oracle"})
        if path == "/experiments/x/iterations":
            return httpx.Response(200, json={"iterations": [{"iteration": 1}, {"iteration": 2}]})
        if path == "/experiments/x/iterations/1/labels":
            return httpx.Response(200, json={"labels": {"2": {"label": "a"}, "4": {"label": "b"}}})
        if path == "/experiments/x/iterations/2/labels":
            return httpx.Response(200, json={"labels": {"3": {"label": "a"}}})
        index = int(path.split("/")[-2])
        return httpx.Response(200, json={"wavelength": [6550.0, 6560.0, 6570.0], "flux": flux[index]})

    this, found = Neighbours(ApiClient("http://api.test", transport=httpx.MockTransport(handle))).nearest(
        TOKEN, "x", "pool", 1, ["a", "b", "c"])
    assert this["flux"] == [1.0, None, 1.0]
    assert found["a"] is not None and found["a"]["index"] == 3 and found["a"]["labelled"] == 2
    assert found["a"]["rms"] == pytest.approx(np.sqrt((0.1 ** 2 + 0.1 ** 2) / 2))
    assert found["b"] is not None and found["b"]["index"] == 4 and found["b"]["rms"] == pytest.approx(2.0)
    assert found["c"] is None
