"""The oracle's dashboard: ``create_app()`` (a Dash app on Flask) and ``serve()`` (gunicorn).

Pages (all under ``ORACULUM_ROOT_PATH``, e.g. ``/oraculum/``):

* ``/``                       experiments: phase, iteration, labels, estimate, live Job progress, actions;
* ``/e/<name>/label``         labelling, keyboard first (``?item=<index>`` opens one spectrum);
* ``/e/<name>/map``           the batch's 2-D map, click to open, lasso to label a group;
* ``/e/<name>/performance``   estimates per iteration, targets, labels per class, candidates;
* ``/login``                  sign in with an API token.

Besides Dash's own routes the server has ``/healthz`` (liveness, also at the root for probes),
``/readyz`` (the API answers), and under ``<prefix>_oraculum/``: ``login`` and ``logout`` (POST
both; the token stays on the server, the browser gets a random session id in an HttpOnly,
SameSite=Strict cookie, see :mod:`oraculum.dashboard.sessions`; signing out needs the page's form
token), ``api/v1/...`` (the browser's authenticated proxy to the API: the labelling page saves
labels through it), and ``events`` (one server-sent event stream per page, merged from the API's
event streams of the experiments shown).

The dashboard reads and writes only through the API (:mod:`oraculum.dashboard.client`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlparse

import flask
import httpx
from dash import Dash, Input, Output, dcc, html

from oraculum import __version__

from . import batchmap, experiments, labelling, performance, samp
from .client import ApiClient, ApiError
from .config import DashboardSettings
from .context import COOKIE, LEGACY_COOKIE, NAME, Context
from .relay import relay
from .ui import error_box

log = logging.getLogger("oraculum.dashboard")

ASSETS = Path(__file__).resolve().parent / "assets"
PROXY_METHODS = ("GET", "PUT", "POST", "DELETE")
#: Headers the browser must send on writes through the proxy: a cross-site form cannot set it,
#: so together with the SameSite=Strict cookie it stops cross-site request forgery.
CSRF_HEADER = "X-Oraculum-Request"


def create_app(settings: DashboardSettings | None = None, client: ApiClient | None = None) -> Dash:
    settings = settings or DashboardSettings()
    client = client or ApiClient(settings.api_url, settings.dashboard_api_timeout)
    ctx = Context(settings, client)
    prefix = settings.prefix
    app = Dash(
        __name__, routes_pathname_prefix=prefix, requests_pathname_prefix=prefix,
        assets_folder=str(ASSETS), title="oraculum", update_title=None, suppress_callback_exceptions=True,
        serve_locally=True, meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    app.layout = html.Div([
        dcc.Location(id="url", refresh="callback-nav"),
        html.Header(id="topbar", className="topbar"),
        html.Main(id="page", className="page"),
        dcc.Store(id="sse-close"),
    ])
    _routes(app, ctx)
    _server_routes(app.server, ctx)
    experiments.register(app, ctx)
    labelling.register(app, ctx)
    batchmap.register(app, ctx)
    performance.register(app, ctx)
    samp.register(app)  # "Send to SAMP" on the labelling and performance pages
    samp.routes(app.server, ctx)
    app.server.config["oraculum.context"] = ctx
    return app


# -- pages -----------------------------------------------------------------------------------------


def relative(ctx: Context, pathname: str | None) -> list[str]:
    path = pathname or "/"
    if path.startswith(ctx.prefix):
        path = path[len(ctx.prefix):]
    elif ctx.prefix != "/" and path.rstrip("/") == ctx.prefix.rstrip("/"):
        path = ""
    return [unquote(part) for part in path.strip("/").split("/") if part]


def sign_out_form(ctx: Context) -> html.Form | None:
    """Sign-out: a POST with the session's form token (a link or a page elsewhere cannot sign out)."""
    session = ctx.session()
    if session is None:
        return None  # the single-user default token: there is nothing to sign out of
    return html.Form([dcc.Input(type="hidden", name="csrf", value=session.csrf, id="logout-csrf"),
                      html.Button("Sign out", type="submit", id="logout", className="linklike")],
                     method="POST", action=ctx.href("_oraculum/logout"), className="logout-form")


def topbar(ctx: Context, me: dict[str, str] | None, parts: list[str]) -> list[Any]:
    items: list[Any] = [dcc.Link("oraculum", href=ctx.href(), className="brand"),
                        dcc.Link("Experiments", href=ctx.href(), className="current" if not parts else "")]
    if len(parts) >= 2 and parts[0] == "e":
        items.append(html.Span(["experiment ", html.Strong(parts[1])], className="who"))
    items.append(html.Span(className="spacer"))
    items.append(html.Span("press ? for keys", className="who"))
    if me:
        items.append(html.Span([me["name"], f" ({me['role']})"], className="who", id="whoami"))
        items.append(sign_out_form(ctx))
    return items


def query(search: str | None) -> dict[str, str]:
    """The parameters of a ``?a=1&b=2`` location search, decoded (the last one of a repeated name)."""
    return dict(parse_qsl((search or "").lstrip("?")))


def login_page(ctx: Context, search: str | None, message: str | None = None) -> html.Div:
    params = query(search)
    error = params.get("error") or message
    target = params.get("next") or ctx.href()
    return html.Div([
        html.H1("Sign in to oraculum"),
        html.P("Paste your API token (your administrator gives you one; its role decides what you may do: "
               "viewer, oracle or admin).", className="muted"),
        html.Div(error, className="error-box", id="login-error") if error else None,
        html.Form([
            html.Label("API token", htmlFor="login-token"),
            dcc.Input(id="login-token", name="token", type="password", autoComplete="current-password",
                      autoFocus=True, required=True),
            dcc.Input(type="hidden", name="next", value=target, id="login-next"),
            html.Button("Sign in", type="submit", className="primary", id="login-submit"),
        ], method="POST", action=ctx.href("_oraculum/login")),
    ], className="card login")


def _routes(app: Dash, ctx: Context) -> None:
    @app.callback(Output("page", "children"), Output("topbar", "children"),
                  Input("url", "pathname"), Input("url", "search"))
    def route(pathname: str | None, search: str | None) -> tuple[Any, Any]:
        parts = relative(ctx, pathname)
        if parts[:1] == ["login"]:
            return login_page(ctx, search), topbar(ctx, None, parts)
        try:
            me = ctx.me()
        except ApiError as error:
            if error.status == 401:
                here = (pathname or ctx.href()) + (search or "")
                return login_page(ctx, f"?next={quote(here)}", None if not ctx.token() else str(error)), \
                    topbar(ctx, None, parts)
            return error_box(error, "The API cannot be used"), topbar(ctx, None, parts)
        params = query(search)
        if not parts:
            return experiments.layout(ctx, me), topbar(ctx, me, parts)
        if parts[0] == "e" and len(parts) >= 2 and NAME.match(parts[1]):
            name, page = parts[1], (parts[2] if len(parts) > 2 else "label")
            if page == "label":
                return labelling.layout(ctx, me, name, params), topbar(ctx, me, parts)
            if page == "map":
                return batchmap.layout(ctx, me, name, params), topbar(ctx, me, parts)
            if page == "performance":
                return performance.layout(ctx, me, name, params), topbar(ctx, me, parts)
        return html.Div([html.H1("Not found"), html.P(["Nothing at this address. ",
                                                        dcc.Link("Back to the experiments", href=ctx.href())])]), \
            topbar(ctx, me, parts)


# -- plain Flask routes: probes, login, the API proxy, events ---------------------------------------


def _secure(ctx: Context) -> bool:
    mode = ctx.settings.dashboard_cookie_secure
    if mode != "auto":
        return mode == "always"
    return flask.request.is_secure or flask.request.headers.get("X-Forwarded-Proto", "").split(",")[0].strip() == "https"


def _cross_site() -> bool:
    """Did another site make the browser send this request (Fetch metadata; absent: not a browser)?"""
    return flask.request.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none")


def _set_session_cookie(ctx: Context, response: flask.Response, value: str) -> None:
    response.set_cookie(COOKIE, value, max_age=int(ctx.settings.dashboard_session_hours * 3600), path=ctx.prefix,
                        httponly=True, samesite="Strict", secure=_secure(ctx))
    response.delete_cookie(LEGACY_COOKIE, path=ctx.prefix, samesite="Strict")


def _safe_next(ctx: Context, target: str | None) -> str:
    """Only a path inside the dashboard: never another site (open redirect)."""
    if not target:
        return ctx.href()
    parsed = urlparse(target)
    if parsed.scheme or parsed.netloc or not target.startswith(ctx.prefix) or target.startswith("//"):
        return ctx.href()
    return target


def _server_routes(server: flask.Flask, ctx: Context) -> None:
    prefix = ctx.prefix
    client = ctx.client
    stream_client = httpx.Client(base_url=client.base_url, timeout=httpx.Timeout(60.0, connect=5.0),
                                 headers={"User-Agent": "oraculum-dashboard-events"})

    def healthz() -> flask.Response:
        return flask.jsonify(status="ok", version=__version__)

    server.add_url_rule(f"{prefix}healthz", "oraculum_healthz", healthz)
    if prefix != "/":
        server.add_url_rule("/healthz", "oraculum_healthz_root", healthz)

    @server.route(f"{prefix}readyz", endpoint="oraculum_readyz")
    def readyz() -> tuple[flask.Response, int]:
        try:
            response = client.http.get("/healthz", timeout=3.0)
            ok = response.status_code == 200
            detail = "ok" if ok else f"HTTP {response.status_code}"
        except httpx.HTTPError as error:
            ok, detail = False, str(error)
        return flask.jsonify(status="ok" if ok else "unavailable", checks={"api": detail}), 200 if ok else 503

    @server.route(f"{prefix}_oraculum/login", methods=["POST"], endpoint="oraculum_login")
    def login() -> flask.Response | tuple[flask.Response, int]:
        if _cross_site():  # another site must not sign the browser in (to its own account)
            return flask.jsonify(detail="sign in from the dashboard's own page"), 403
        token = (flask.request.form.get("token") or "").strip()
        target = _safe_next(ctx, flask.request.form.get("next"))
        try:
            me = client.whoami(token, ttl=0.0)
        except ApiError as error:
            message = "That token is not valid." if error.status == 401 else str(error)
            return flask.redirect(ctx.href(f"login?error={quote(message)}&next={quote(target)}"), code=303)
        ctx.sessions.delete(flask.request.cookies.get(COOKIE))  # a new id at every sign-in
        session = ctx.sessions.create(token, str(me.get("name")), str(me.get("role")))
        response = flask.redirect(target, code=303)
        _set_session_cookie(ctx, response, session.id)
        log.info("%s (%s) signed in", me.get("name"), me.get("role"))
        return response

    @server.route(f"{prefix}_oraculum/logout", methods=["POST"], endpoint="oraculum_logout")
    def logout() -> flask.Response | tuple[flask.Response, int]:
        session = ctx.session()
        if session is not None and (_cross_site() or not session.csrf_ok(flask.request.form.get("csrf"))):
            return flask.jsonify(detail="sign out with the dashboard's own Sign out button"), 403
        ctx.sessions.delete(flask.request.cookies.get(COOKIE))
        response = flask.redirect(ctx.href("login"), code=303)
        response.delete_cookie(COOKIE, path=prefix, samesite="Strict")
        response.delete_cookie(LEGACY_COOKIE, path=prefix, samesite="Strict")
        return response

    @server.route(f"{prefix}_oraculum/api/v1/<path:path>", methods=list(PROXY_METHODS), endpoint="oraculum_proxy")
    def proxy(path: str) -> flask.Response:
        if flask.request.method != "GET" and flask.request.headers.get(CSRF_HEADER) != "1":
            return flask.jsonify(detail=f"writes through the dashboard need the {CSRF_HEADER} header"), 403
        token = ctx.token()
        if not token:
            return flask.jsonify(detail="not signed in"), 401
        headers = {"Authorization": f"Bearer {token}"}
        if flask.request.content_type:
            headers["Content-Type"] = flask.request.content_type
        response = relay(client, flask.request.method, f"/api/v1/{path}", params=flask.request.args,
                         content=flask.request.get_data(), headers=headers, keep=("Retry-After", "Content-Disposition"))
        response.headers["Cache-Control"] = "no-store"
        return response

    @server.route(f"{prefix}_oraculum/events", endpoint="oraculum_events")
    def events() -> Any:
        token = ctx.token()
        names = [n for n in flask.request.args.get("experiments", "").split(",") if NAME.match(n)][:32]
        try:
            client.whoami(token)
        except ApiError as error:
            return flask.jsonify(detail=str(error)), error.status or 502
        return flask.Response(_merged_events(stream_client, token or "", names, ctx.settings.dashboard_events_seconds),
                              mimetype="text/event-stream",
                              headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def _sse_messages(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, JSON data as a dict) of each message of a server-sent event stream (comments
    and keep-alives skipped; data that is not a JSON object is wrapped as ``text`` or ``value``)."""
    kind, data = "message", list[str]()
    for line in lines:
        if line.startswith(":"):
            continue
        if line:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                kind = value
            elif field == "data":
                data.append(value)
            continue
        if data:
            text = "\n".join(data)
            try:
                payload = json.loads(text)
            except ValueError:
                payload = {"text": text}
            yield kind, payload if isinstance(payload, dict) else {"value": payload}
        kind, data = "message", []


def _merged_events(http: httpx.Client, token: str, names: list[str], seconds: float) -> Any:
    """One stream of the events of several experiments (browsers allow few connections per site)."""
    events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue(maxsize=2000)
    stop = threading.Event()
    responses: list[httpx.Response] = []

    def pump(name: str) -> None:
        try:
            with http.stream("GET", f"/api/v1/experiments/{name}/events", params={"timeout": seconds},
                             headers={"Authorization": f"Bearer {token}"}) as response:
                responses.append(response)
                if response.status_code != 200:
                    response.read()
                    events.put(("upstream-error", {"experiment": name, "status": response.status_code,
                                                   "message": response.text[:300]}))
                    return
                for kind, payload in _sse_messages(response.iter_lines()):
                    if stop.is_set():
                        return
                    payload.setdefault("experiment", name)
                    if not events.full():
                        events.put((kind, payload))
        except (httpx.HTTPError, RuntimeError) as error:
            if not stop.is_set():
                events.put(("upstream-error", {"experiment": name, "message": str(error)}))
        finally:
            events.put(("_end", {"experiment": name}))

    threads = [threading.Thread(target=pump, args=(name,), daemon=True, name=f"events-{name}") for name in names]
    for thread in threads:
        thread.start()

    def generate() -> Any:
        yield "retry: 3000\n\n"
        alive = len(threads)
        deadline = time.monotonic() + seconds
        number = 0
        try:
            while alive and time.monotonic() < deadline:
                try:
                    kind, data = events.get(timeout=15.0)
                except queue.Empty:
                    yield ": keepalive\n\n"
                    continue
                if kind == "_end":
                    alive -= 1
                    continue
                number += 1
                yield f"id: {number}\nevent: {kind}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"
        finally:
            stop.set()
            for response in list(responses):  # noqa: PERF101 - another thread may still append
                with contextlib.suppress(Exception):  # closing a stream another thread reads
                    response.close()

    return generate()


# -- the production server --------------------------------------------------------------------------


def serve(settings: DashboardSettings, host: str = "127.0.0.1", port: int = 8050, workers: int = 2,
          threads: int = 32, log_level: str = "info", timeout: int = 120) -> None:
    """Serve the dashboard with gunicorn (threaded workers: event streams hold a thread each)."""
    from gunicorn.app.base import BaseApplication

    class Gunicorn(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in {
                "bind": f"{host}:{port}", "workers": workers, "worker_class": "gthread", "threads": threads,
                "timeout": timeout, "graceful_timeout": 10, "keepalive": 5, "loglevel": log_level,
                "accesslog": "-" if log_level == "debug" else None, "errorlog": "-",
                "forwarded_allow_ips": "*", "proc_name": "oraculum-dashboard",
            }.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
            return create_app(settings).server

    Gunicorn().run()
