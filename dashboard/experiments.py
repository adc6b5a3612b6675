"""The experiments page: every experiment with its phase, iteration, labels so far, latest
estimate and a live progress bar (Job progress and labelling, from the API's event streams);
suspend and resume (admin), and create an experiment from a manifest (admin)."""

from __future__ import annotations

import base64
from typing import Any

from dash import ALL, Dash, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx

from .client import ApiError
from .context import ACTIONS, Context, allows
from .ui import card, error_box, fmt_estimate, phase_badge

EXAMPLE = """apiVersion: oraculum.dev/v1alpha1
kind: ActiveLearningExperiment
metadata:
  name: be-stars
spec:
  dataset: pool
  classes:
    - {name: absorption, hotkey: "1"}
    - {name: emission, hotkey: "2", target: true}
    - {name: double-peak, hotkey: "3", target: true}
  acquisition: {strategy: entropy, batchSize: 100}
  estimation: {size: 30}
  oracle: {type: human}
"""


def layout(ctx: Context, me: dict[str, str]) -> html.Div:
    admin = allows(me.get("role"), "admin")
    create = card(
        "Create an experiment from a manifest",
        html.P(["An ActiveLearningExperiment manifest, as for ", html.Code("kubectl apply -f"), " or ",
                html.Code("oraculum run"), ". Drop a YAML file or paste it."], className="muted"),
        dcc.Upload(html.Div(["Drop a manifest here or ", html.A("choose a file")]), id="exp-upload",
                   className="upload", accept=".yaml,.yml,.json", multiple=False),
        dcc.Textarea(id="exp-manifest", className="manifest", placeholder=EXAMPLE, spellCheck=False),
        html.Div([html.Button("Create", id="exp-create", className="primary")], className="actions"),
        html.Div(id="exp-create-msg"),
        id="exp-create-card",
    ) if admin else None
    return html.Div([
        html.H1("Experiments"),
        dcc.Store(id="exp-refresh"), dcc.Store(id="exp-live"), dcc.Store(id="exp-names"), dcc.Store(id="exp-sse"),
        dcc.Interval(id="exp-poll", interval=30_000),
        html.Div(id="exp-message"),
        html.Div(html.P("loading…", className="muted"), id="exp-table", className="card"),
        create,
    ], id="experiments-root")


def _latest_report(detail: dict[str, Any]) -> dict[str, Any] | None:
    reports = sorted(detail.get("progress") or [], key=lambda r: r.get("updated") or "")
    return reports[-1] if reports else None


def _progress_cell(name: str, detail: dict[str, Any]) -> html.Div:
    status = detail.get("status") or {}
    fraction, text = None, ""
    report = _latest_report(detail)
    batch = status.get("batch") or {}
    if detail.get("phase") == "AwaitingLabels" and batch.get("size"):
        fraction = batch.get("labelled", 0) / max(1, batch["size"])
        text = f"labelling {batch.get('labelled', 0)} / {batch['size']}"
    elif report is not None and detail.get("phase") not in ("Succeeded", "Failed"):
        fraction = report.get("fraction")
        text = " · ".join(str(x) for x in (report.get("job"), report.get("step"), report.get("message")) if x)
    elif detail.get("phase") == "Succeeded":
        fraction, text = 1.0, "done"
    width = f"{100 * fraction:.1f}%" if fraction is not None else "0%"
    return html.Div([
        html.Div(html.Div(className="fill", style={"width": width}, id={"type": "exp-jobfill", "name": name}),
                 className="bar"),
        html.Div(text, className="jobtext", id={"type": "exp-jobtext", "name": name}),
    ])


def _row(ctx: Context, me: dict[str, str], detail: dict[str, Any]) -> html.Tr:
    name = detail["name"]
    status = detail.get("status") or {}
    batch = status.get("batch") or {}
    estimate = status.get("estimate") or {}
    history = detail.get("history") or []
    if not estimate and history:
        last = next((h for h in reversed(history) if h.get("estimate") is not None), None)
        if last:
            estimate = {"value": last["estimate"], "low": last.get("low"), "high": last.get("high"),
                        "iteration": last.get("iteration")}
    labels = status.get("labels") or (history[-1].get("labels") if history else 0) or 0
    batch_text = f" · batch {batch.get('labelled', 0)} / {batch.get('size')}" if batch.get("size") else ""
    actions: list[Any] = [
        dcc.Link("Label", href=ctx.experiment_href(name, "label"), className="btn", id={"type": "exp-open", "name": name}),
        dcc.Link("Map", href=ctx.experiment_href(name, "map"), className="btn"),
        dcc.Link("Performance", href=ctx.experiment_href(name, "performance"), className="btn"),
    ]
    if allows(me.get("role"), "admin"):
        suspended = bool(detail.get("suspended"))
        actions.append(html.Button("Resume" if suspended else "Suspend", className="danger" if not suspended else "",
                                   id={"type": "exp-act", "name": name, "action": "resume" if suspended else "suspend"}))
    estimate_text = fmt_estimate(estimate.get("value"), estimate.get("low"), estimate.get("high"))
    if estimate.get("value") is not None and estimate.get("iteration") is not None:
        estimate_text += f" (it. {estimate['iteration']})"
    return html.Tr([
        html.Td(dcc.Link(html.Strong(name), href=ctx.experiment_href(name, "label"))),
        html.Td([phase_badge(detail.get("phase", "Pending"), bool(detail.get("suspended"))),
                 html.Div(detail.get("message") or "", className="jobtext")]),
        html.Td(str(detail.get("iteration") if detail.get("iteration") is not None else "—")),
        html.Td(f"{labels}{batch_text}"),
        html.Td(estimate_text, title="precision of the predicted targets, with its confidence interval"),
        html.Td(_progress_cell(name, detail), style={"minWidth": "200px"}),
        html.Td(html.Div(actions, className="actions")),
    ], id={"type": "exp-row", "name": name})


def register(app: Dash, ctx: Context) -> None:
    @app.callback(Output("exp-table", "children"), Output("exp-names", "data"),
                  Input("exp-refresh", "data"), Input("exp-poll", "n_intervals"))
    def table(_: Any, __: Any) -> tuple[Any, Any]:
        try:
            me = ctx.me()
            summaries = ctx.get("/experiments")
            token = ctx.token()
            details = list(ctx.client.pool.map(lambda s: ctx.client.get(f"/experiments/{s['name']}", token), summaries))
        except ApiError as error:
            return error_box(error, "Experiments cannot be listed"), no_update
        if not details:
            hint = " Create one below." if allows(me.get("role"), "admin") else " Ask an admin to create one."
            return html.P("No experiments yet." + hint, className="muted"), []
        head = html.Tr([html.Th(h) for h in ("Experiment", "Phase", "Iteration", "Labels", "Latest estimate",
                                              "Progress", "")])
        return html.Table([html.Thead(head), html.Tbody([_row(ctx, me, d) for d in details])],
                          className="grid", id="exp-grid"), [d["name"] for d in details]

    app.clientside_callback(
        "function (names) { return window.dash_clientside.oraculum.experiments_live(names); }",
        Output("exp-sse", "data"), Input("exp-names", "data"))
    app.clientside_callback(
        "function (live) { return window.dash_clientside.oraculum.experiments_bars(live); }",
        Output({"type": "exp-jobfill", "name": ALL}, "style"), Output({"type": "exp-jobtext", "name": ALL}, "children"),
        Input("exp-live", "data"))

    @app.callback(Output("exp-message", "children"), Output("exp-refresh", "data", allow_duplicate=True),
                  Input({"type": "exp-act", "name": ALL, "action": ALL}, "n_clicks"), prevent_initial_call=True)
    def act(clicks: list[int | None]) -> tuple[Any, Any]:
        which = dash_ctx.triggered_id
        if not which or not any(clicks) or not dash_ctx.triggered or not dash_ctx.triggered[0].get("value"):
            return no_update, no_update
        # the button's id comes from the browser: the action from the fixed table, the name from the API's list
        action = which.get("action") if isinstance(which, dict) else None
        if not isinstance(action, str) or action not in ACTIONS:
            return error_box("the page asked for an action the dashboard does not offer"), no_update
        try:
            name = ctx.experiment_name(which.get("name"))
            ctx.send("POST", f"/experiments/{name}/{ACTIONS[action]}")
        except ApiError as error:
            return error_box(error, f"Not done ({action})"), no_update
        done = "suspended" if action == "suspend" else "resumed"
        return html.Div(f"Experiment {name} {done}.", className="ok-box"), {"acted": name, "action": action}

    @app.callback(Output("exp-manifest", "value"), Input("exp-upload", "contents"), prevent_initial_call=True)
    def upload(contents: str | None) -> Any:
        if not contents:
            return no_update
        _, _, data = contents.partition(",")
        try:
            return base64.b64decode(data).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return "# that file is not UTF-8 text"

    @app.callback(Output("exp-create-msg", "children"), Output("exp-refresh", "data", allow_duplicate=True),
                  Input("exp-create", "n_clicks"), State("exp-manifest", "value"), prevent_initial_call=True)
    def create(clicks: int | None, text: str | None) -> tuple[Any, Any]:
        if not clicks:
            return no_update, no_update
        if not (text or "").strip():
            return error_box("paste or drop a manifest first"), no_update
        try:
            created = ctx.client.send("POST", "/experiments", ctx.token(), None, content=text.encode("utf-8"),
                                      headers={"Content-Type": "application/yaml"})
        except ApiError as error:
            return error_box(error, "Not created"), no_update
        name = created.get("name")
        return html.Div(["Created ", html.Strong(name), f" ({created.get('backend')} backend). ",
                         dcc.Link("Open it", href=ctx.experiment_href(name, "label"))], className="ok-box"), \
            {"created": name}
