"""The dashboard's server side without a browser: key maps, line markers in air and vacuum, the
sign-in session (a server-side session id in the cookie, never the token; sign-out a POST with the
page's form token), forged Dash callbacks that try to steer the API path, the authenticated proxy
and its CSRF guard, prefixes and safe redirects, the API's error messages, and the candidate
downloads (CSV parsed, VOTable written and read back). The API is a stand-in (httpx.MockTransport)
here; tests/dashboard/test_dashboard.py runs the real one in Chromium."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from oraculum.dashboard.app import _safe_next, _sse_messages, create_app, query, relative
from oraculum.dashboard.batchmap import _selection_key
from oraculum.dashboard.client import ApiClient, ApiError, error_message
from oraculum.dashboard.config import DashboardSettings
from oraculum.dashboard.context import COOKIE, Context
from oraculum.dashboard.sessions import SessionStore
from oraculum.dashboard.labelling import keymap
from oraculum.dashboard.performance import parse_csv, votable_bytes
from oraculum.dashboard.spectra import Neighbours, line_markers
from oraculum.spectra.wavelength import LINES_VACUUM_A, vacuum_to_air

TOKEN = "oracle-token-0123456789abcdef"
#: The one experiment of the stand-in API: at iteration 1, on the dataset pool.
EXPERIMENT = {"kind": "ActiveLearningExperiment", "name": "exp", "phase": "AwaitingLabels", "iteration": 1,
              "spec": {"dataset": "pool"}, "status": {"iteration": 1}}


def fake_api(seen: list[httpx.Request]) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.headers.get("Authorization") != f"Bearer {TOKEN}":
            return httpx.Response(401, json={"detail": "invalid token"})
        if request.url.path == "/api/v1/whoami":
            return httpx.Response(200, json={"name": "olga", "role": "oracle"})
        if request.url.path == "/api/v1/experiments" and request.method == "GET":
            return httpx.Response(200, json=[{k: v for k, v in EXPERIMENT.items() if k not in ("spec", "status")}])
        if request.url.path == "/api/v1/experiments/exp" and request.method == "GET":
            return httpx.Response(200, json=EXPERIMENT)
        if request.url.path.endswith("/labels/7") and request.method == "PUT":
            return httpx.Response(409, json={"detail": {"message": "1 item(s) are being labelled by someone else right now",
                                                        "holders": {"7": "otto"}}})
        return httpx.Response(200, json={"path": request.url.path, "body": request.content.decode() or None})

    return httpx.MockTransport(handle)


@pytest.fixture
def app_and_calls(tmp_path: Path) -> tuple[Any, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    settings = DashboardSettings(api_url="http://api.test", root_path="/oraculum",
                                 dashboard_session_file=str(tmp_path / "sessions.sqlite"))
    app = create_app(settings, ApiClient(settings.api_url, transport=fake_api(seen)))
    return app, seen


def sign_in(client: Any, token: str = TOKEN) -> str:
    """Sign in as the login form does; the session id the cookie now holds."""
    answer = client.post("/oraculum/_oraculum/login", data={"token": token, "next": "/oraculum/"})
    assert answer.status_code == 303 and answer.headers["Location"] == "/oraculum/"
    cookie = client.get_cookie(COOKIE, path="/oraculum/")
    assert cookie is not None
    return str(cookie.value)


def dash_call(app: Any, client: Any, output: str, inputs: list[Any], state: list[Any] = (),
              changed: list[str] | None = None) -> Any:
    """POST to Dash's ``/_dash-update-component`` what a browser (or anyone) could send: the
    callback whose outputs include ``output``, with the given inputs and state (id, property, value)."""
    from dash._utils import split_callback_id

    def named(outputs: Any) -> list[str]:
        return [f"{o['id']}.{o['property'].split('@')[0]}" for o in (outputs if isinstance(outputs, list) else [outputs])]

    (key,) = [k for k in app.callback_map if output in named(split_callback_id(k))]
    outputs = split_callback_id(key)

    def entry(item: Any) -> Any:
        if isinstance(item, list):
            return [entry(i) for i in item]
        component, prop, value = item
        return {"id": component, "property": prop, "value": value}

    def prop_id(item: Any) -> str:
        while isinstance(item, list):
            item = item[0]
        component, prop, _ = item
        text = json.dumps(component, sort_keys=True, separators=(",", ":")) if isinstance(component, dict) else component
        return f"{text}.{prop}"

    body = {"output": key, "outputs": outputs, "inputs": [entry(i) for i in inputs],
            "state": [entry(s) for s in state], "changedPropIds": changed or [prop_id(inputs[0])]}
    answer = client.post("/oraculum/_dash-update-component", json=body)
    assert answer.status_code in (200, 204), answer.text[:500]
    return answer.json if answer.status_code == 200 else None


def writes(seen: list[httpx.Request]) -> list[str]:
    return [f"{r.method} {r.url.path}" for r in seen if r.method != "GET"]


def paths(seen: list[httpx.Request]) -> list[str]:
    return [r.url.path for r in seen]


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


def test_login_sets_a_strict_http_only_session_cookie_without_the_token(
        app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    app, seen = app_and_calls
    client = app.server.test_client()
    bad = client.post("/oraculum/_oraculum/login", data={"token": "nope-nope-nope-nope", "next": "/oraculum/"})
    assert bad.status_code == 303 and "/oraculum/login?error=" in bad.headers["Location"]
    assert COOKIE not in bad.headers.get("Set-Cookie", "")
    good = client.post("/oraculum/_oraculum/login", data={"token": TOKEN, "next": "https://evil.example/"},
                       headers={"X-Forwarded-Proto": "https"})
    assert good.status_code == 303 and good.headers["Location"] == "/oraculum/"
    (cookie,) = [c for c in good.headers.getlist("Set-Cookie") if c.startswith(f"{COOKIE}=")]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" in cookie and "Path=/oraculum/" in cookie
    value = cookie.split(";")[0].removeprefix(f"{COOKIE}=")
    # the cookie is a random session id: no token in it, in any encoding
    assert len(value) >= 40 and TOKEN not in value and TOKEN not in good.headers.get("Set-Cookie", "")
    import base64

    assert TOKEN.encode() not in base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    assert "oraculum_token=;" in " ".join(good.headers.getlist("Set-Cookie"))  # the old token cookie is dropped
    # the session stands for the token on the server: the proxy forwards it
    calls = len(seen)
    assert client.get("/oraculum/_oraculum/api/v1/whoami").json == {"name": "olga", "role": "oracle"}
    assert len(seen) == calls + 1 and seen[-1].headers["Authorization"] == f"Bearer {TOKEN}"
    # a form on another site cannot sign the browser in (Fetch metadata)
    forged = client.post("/oraculum/_oraculum/login", data={"token": TOKEN}, headers={"Sec-Fetch-Site": "cross-site"})
    assert forged.status_code == 403 and COOKIE not in forged.headers.get("Set-Cookie", "")


def test_a_raw_token_in_the_cookie_signs_nobody_in_and_sessions_expire(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    now = [1000.0]
    settings = DashboardSettings(api_url="http://api.test", root_path="/oraculum",
                                 dashboard_session_file=str(tmp_path / "unused.sqlite"))
    sessions = SessionStore(tmp_path / "s.sqlite", lifetime=3600.0, idle=600.0, clock=lambda: now[0])
    ctx_client = ApiClient(settings.api_url, transport=fake_api(seen))
    app = create_app(settings, ctx_client)
    app.server.config["oraculum.context"].sessions = sessions
    client = app.server.test_client()
    client.set_cookie(COOKIE, TOKEN, path="/oraculum/")  # what the cookie used to hold
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 401
    client.set_cookie("oraculum_token", TOKEN, path="/oraculum/")  # the old cookie's name
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 401
    sign_in(client)
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 200
    now[0] += 599  # used within the idle timeout: still signed in, and the idle clock starts again
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 200
    now[0] += 599
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 200
    now[0] += 601  # idle too long
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 401
    sign_in(client)
    for _ in range(7):  # kept busy, it still ends after its lifetime
        now[0] += 500
        assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 200
    now[0] += 500
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 401


def csrf_of_page(app: Any, client: Any) -> str:
    """The sign-out form's token, from the top bar the route callback renders for this session."""
    page = dash_call(app, client, "page.children", [("url", "pathname", "/oraculum/"), ("url", "search", "")])
    found = re.search(r'"id":\s*"logout-csrf".*?"value":\s*"([^"]+)"|"value":\s*"([^"]+)"[^{}]*"id":\s*"logout-csrf"',
                      json.dumps(page["response"]["topbar"]))
    assert found, page["response"]["topbar"]
    return found.group(1) or found.group(2)


def test_sign_out_is_a_post_with_the_pages_form_token(app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    app, _ = app_and_calls
    client = app.server.test_client()
    session = sign_in(client)
    whoami = "/oraculum/_oraculum/api/v1/whoami"
    # a link (GET), as an <img> or a link on any page could make, does not sign out
    link = client.get("/oraculum/_oraculum/logout")  # (Dash's page, as for any unknown address)
    assert link.status_code != 303 and COOKIE not in " ".join(link.headers.getlist("Set-Cookie"))
    assert client.get(whoami).status_code == 200
    # nor a POST without the page's form token, or with another one
    assert client.post("/oraculum/_oraculum/logout").status_code == 403
    assert client.post("/oraculum/_oraculum/logout", data={"csrf": "guess"}).status_code == 403
    assert client.get(whoami).status_code == 200
    csrf = csrf_of_page(app, client)
    assert csrf and csrf != session
    cross = client.post("/oraculum/_oraculum/logout", data={"csrf": csrf}, headers={"Sec-Fetch-Site": "cross-site"})
    assert cross.status_code == 403 and client.get(whoami).status_code == 200
    out = client.post("/oraculum/_oraculum/logout", data={"csrf": csrf})
    assert out.status_code == 303 and out.headers["Location"] == "/oraculum/login"
    assert f"{COOKIE}=;" in " ".join(out.headers.getlist("Set-Cookie"))
    assert client.get(whoami).status_code == 401
    # the session is gone on the server: a copy of the cookie kept from before is worthless
    client.set_cookie(COOKIE, session, path="/oraculum/")
    assert client.get(whoami).status_code == 401


FORGED_IDS = [
    {"type": "exp-act", "name": "exp/iterations/0", "action": "submit"},  # the red team's request
    {"type": "exp-act", "name": "exp", "action": "iterations/0/submit"},
    {"type": "exp-act", "name": "exp", "action": "delete"},
    {"type": "exp-act", "name": "other", "action": "suspend"},  # not an experiment the API lists
    {"type": "exp-act", "name": "../datasets/pool", "action": "suspend"},
    {"type": "exp-act", "name": ["exp"], "action": ["suspend"]},
]


@pytest.mark.parametrize("forged", FORGED_IDS, ids=[json.dumps(f["name"]) + ":" + json.dumps(f["action"])
                                                    for f in FORGED_IDS])
def test_a_forged_suspend_button_cannot_steer_the_api_path(app_and_calls: tuple[Any, list[httpx.Request]],
                                                           forged: dict[str, Any]) -> None:
    app, seen = app_and_calls
    client = app.server.test_client()
    sign_in(client)
    answer = dash_call(app, client, "exp-message.children", [[({**forged}, "n_clicks", 1)]])
    assert writes(seen) == [], "a forged component id reached the API"
    assert answer is not None and "error-box" in json.dumps(answer["response"]["exp-message"])
    # the real button of the real experiment does what it says
    dash_call(app, client, "exp-message.children", [[({"type": "exp-act", "name": "exp", "action": "suspend"},
                                                      "n_clicks", 1)]])
    assert writes(seen) == ["POST /api/v1/experiments/exp/suspend"]


def test_forged_page_state_cannot_steer_the_api_path(app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    """The labelling, map and performance callbacks take the experiment, its dataset and its
    current iteration from the API, whatever the page's stores say."""
    app, seen = app_and_calls
    client = app.server.test_client()
    sign_in(client)
    items = {"items": [{"index": 1}]}
    # submit: the red team's own path, an iteration that is not the current one, one with a path in it
    for init, data in (({"experiment": "exp/iterations/0"}, {"iteration": 1, **items}),
                       ({"experiment": "exp"}, {"iteration": 0, **items}),
                       ({"experiment": "exp"}, {"iteration": "1/../../../experiments/other", **items}),
                       ({"experiment": "other"}, {"iteration": 1, **items})):
        answer = dash_call(app, client, "lab-submit-msg.children", [("lab-submit", "n_clicks", 1)],
                           [("lab-init", "data", init), ("lab-data", "data", data)])
        assert "error-box" in json.dumps(answer["response"]), (init, data)
    assert writes(seen) == []
    dash_call(app, client, "lab-submit-msg.children", [("lab-submit", "n_clicks", 1)],
              [("lab-init", "data", {"experiment": "exp"}), ("lab-data", "data", {"iteration": 1, **items})])
    assert writes(seen) == ["POST /api/v1/experiments/exp/iterations/1/submit"]

    # the lasso's bulk label: the same checks
    data = {"experiment": "exp", "iteration": 0, "dataset": "pool", "points": []}
    previewed = {"key": _selection_key([3]), "sample": [3]}
    answer = dash_call(app, client, "map-message.children", [("map-confirm", "n_clicks", 1)],
                       [("map-chosen", "data", [3]), ("map-class", "value", "a"), ("map-previewed", "data", previewed),
                        ("map-data", "data", data)])
    assert "error-box" in json.dumps(answer["response"])
    assert writes(seen) == ["POST /api/v1/experiments/exp/iterations/1/submit"]

    # reads: the dataset comes from the experiment, not from the page; indices are numbers
    seen.clear()
    for current in ({"experiment": "exp", "dataset": "../experiments/exp/iterations/0/submit?", "index": 2},
                    {"experiment": "exp", "dataset": "pool", "index": "2/../../../../whoami"},
                    {"experiment": "exp/x", "dataset": "pool", "index": 2}):
        dash_call(app, client, "lab-meta.children", [("lab-current", "data", current)])
    spectra = [p for p in paths(seen) if "/spectra/" in p or "/datasets/" in p]
    assert spectra == ["/api/v1/datasets/pool/spectra/2"], paths(seen)
    seen.clear()
    dash_call(app, client, "perf-rows.data", [("perf-cand-iteration", "value", "1/../../../../whoami")],
              [("perf-init", "data", {"experiment": "exp"})])
    dash_call(app, client, "perf-rows.data", [("perf-cand-iteration", "value", 1)],
              [("perf-init", "data", {"experiment": "exp/../other"})])
    dash_call(app, client, "perf-rows.data", [("perf-cand-iteration", "value", 1)],
              [("perf-init", "data", {"experiment": "exp"})])
    assert [p for p in paths(seen) if "candidates" in p] == ["/api/v1/experiments/exp/iterations/1/candidates.csv"]


def test_the_proxy_forwards_the_oracles_token_and_guards_writes(app_and_calls: tuple[Any, list[httpx.Request]]) -> None:
    app, seen = app_and_calls
    client = app.server.test_client()
    assert client.get("/oraculum/_oraculum/api/v1/whoami").status_code == 401  # no cookie, no default token
    sign_in(client)
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
