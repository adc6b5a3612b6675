"""The batch map: the 2-D map of the batch (PCA, t-SNE or UMAP of the network's embedding, as the
iteration computed them), coloured by prediction, uncertainty or label. Click a point to open that
spectrum; lasso a group to label it at once, after looking at a random few of the selection
(the confirmation button appears only with a preview of the current selection)."""

from __future__ import annotations

import hashlib
import random
import time
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dcc, html, no_update
from dash import ctx as dash_ctx

from .client import ApiError
from .context import Context, allows, whole
from .spectra import class_colour, thumbnails
from .ui import card, error_box, experiment_tabs

PREVIEW = 6
METHOD_NAMES = {"pca": "PCA", "tsne": "t-SNE", "umap": "UMAP"}
HIDDEN = "hidden (blind)"
NONE = "not labelled"
#: Colours of the groups that are not classes (sets, unsure); anything else is grey.
OTHER_COLOURS = {"oracle": "#1b3a6b", "estimation": "#7a4fb5", "unsure": "#b8860b"}


def layout(ctx: Context, me: dict[str, str], name: str, query: dict[str, str]) -> html.Div:
    can_label = allows(me.get("role"), "oracle")
    lasso = card(
        "Label a selection",
        html.P("Draw a lasso (or a box) around spectra on the map. Before anything is written you see a random "
               f"few ({PREVIEW}) of the selection and confirm.", className="muted"),
        html.Div("Nothing selected.", id="map-selection"),
        dcc.Checklist(id="map-include-estimation", options=[{"label": " include estimation-sample spectra "
                                                              "(they are meant to be judged one by one)",
                                                              "value": "yes"}], value=[]),
        html.Div([html.Strong("Label as "), dcc.RadioItems(id="map-class", inline=True, options=[], value=None)],
                 style={"margin": "8px 0"}),
        html.Div([html.Button("Preview a random few", id="map-preview", disabled=True),
                  html.Button("Confirm", id="map-confirm", className="primary", disabled=True)], className="actions"),
        html.Div(id="map-message"),
        id="map-lasso-card",
    ) if can_label else card("Label a selection", html.P(f"{me['name']} is a {me['role']}: labelling needs the oracle "
                                                         "role.", className="muted"))
    return html.Div([
        dcc.Store(id="map-init", data={"experiment": name}), dcc.Store(id="map-data"), dcc.Store(id="map-chosen"),
        dcc.Store(id="map-previewed"), dcc.Store(id="map-reload"),
        experiment_tabs(ctx, name, "map"),
        html.Div(id="map-error"),
        html.Div([
            html.Div([html.Strong("Map "), dcc.RadioItems(id="map-method", inline=True, options=[], value=None)]),
            html.Div([html.Strong("Colour by "), dcc.RadioItems(
                id="map-colour", inline=True, value="prediction",
                options=[{"label": " prediction", "value": "prediction"}, {"label": " uncertainty", "value": "uncertainty"},
                         {"label": " label", "value": "label"}, {"label": " set", "value": "set"}])]),
            html.Span("", id="map-notes", className="muted"),
        ], className="map-controls card"),
        html.Div([
            card(None, dcc.Graph(id="map-graph", style={"height": "64vh"},
                                 config={"displaylogo": False, "scrollZoom": True}), className="graph-card"),
            html.Aside([lasso]),
        ], className="lab-main"),
        card("Preview of the selection", html.Div("No preview yet.", id="map-preview-area", className="muted"),
             id="map-preview-card"),
    ], id="map-root")


def _selection_key(indices: list[int]) -> str:
    return hashlib.sha1(",".join(map(str, sorted(indices))).encode()).hexdigest()[:16]


def register(app: Dash, ctx: Context) -> None:
    @app.callback(Output("map-data", "data"), Output("map-method", "options"), Output("map-method", "value"),
                  Output("map-class", "options"), Output("map-notes", "children"), Output("map-error", "children"),
                  Input("map-init", "data"), Input("map-reload", "data"), State("map-method", "value"))
    def load(init: dict[str, Any] | None, _: Any, method: str | None) -> tuple[Any, ...]:
        if not init:
            return (no_update,) * 6
        try:
            name = ctx.experiment_name(init.get("experiment"))
            batch = ctx.get(f"/experiments/{name}/batch")
            document = ctx.get(f"/experiments/{name}/iterations/{batch['iteration']}/map")
        except ApiError as error:
            return None, [], None, [], "", error_box(error, "No map")
        items = {item["index"]: item for item in batch["items"]}
        points = []
        for point in document["points"]:
            item = items.get(point["index"], {})
            label = (item.get("label") or {}).get("label")
            points.append({
                "index": point["index"], "id": point["id"], "set": point["set"], "coordinates": point["coordinates"],
                "label": label, "predicted": item.get("predicted") or (HIDDEN if item.get("prediction_hidden") else None),
                "score": item.get("score"), "hidden": bool(item.get("prediction_hidden")),
            })
        methods = [m for m in document.get("methods") or [] if any(p["coordinates"].get(m) for p in points)]
        options = [{"label": f" {METHOD_NAMES.get(m, m)}", "value": m} for m in methods]
        chosen = method if method in methods else (methods[0] if methods else None)
        classes = [c["name"] for c in batch.get("classes") or []]
        data = {"experiment": name, "iteration": batch["iteration"], "dataset": batch["dataset"], "classes": classes,
                "points": points, "embedding": document.get("embedding"), "loaded": time.time()}
        notes = "; ".join([f"iteration {batch['iteration']}", document.get("embedding") or ""]
                          + list(document.get("notes") or []))
        return data, options, chosen, [{"label": f" {c} ", "value": c} for c in classes + ["unsure"]], notes, None

    @app.callback(Output("map-graph", "figure"), Input("map-data", "data"), Input("map-method", "value"),
                  Input("map-colour", "value"))
    def figure(data: dict[str, Any] | None, method: str | None, colour: str) -> Any:
        fig = go.Figure()
        fig.update_layout(margin={"l": 40, "r": 10, "t": 10, "b": 40}, plot_bgcolor="#fff", paper_bgcolor="#fff",
                          dragmode="lasso", clickmode="event+select", legend={"orientation": "h", "y": -0.08},
                          uirevision=f"{(data or {}).get('iteration')}:{method}", hovermode="closest")
        if not data or not method:
            return fig
        points = [p for p in data["points"] if p["coordinates"].get(method)]
        classes = data["classes"]
        symbol = {"oracle": "circle", "estimation": "diamond"}

        def hover(p: dict[str, Any]) -> str:
            score = f"{p['score']:.3f}" if p.get("score") is not None else "—"
            return (f"#{p['index']} {p['id']}<br>{p['set']} · predicted {p['predicted'] or '—'} · uncertainty {score}"
                    f"<br>label: {p['label'] or NONE}<br><i>click to open</i>")

        def trace(group: list[dict[str, Any]], name: str, **marker: Any) -> go.Scatter:
            return go.Scatter(
                x=[p["coordinates"][method][0] for p in group], y=[p["coordinates"][method][1] for p in group],
                mode="markers", name=name, customdata=[p["index"] for p in group],
                text=[hover(p) for p in group], hovertemplate="%{text}<extra></extra>",
                marker={"size": 11, "line": {"width": 1, "color": "#ffffff"},
                        "symbol": [symbol.get(p["set"], "circle") for p in group], **marker})

        if colour == "uncertainty":
            known = [p for p in points if p.get("score") is not None]
            unknown = [p for p in points if p.get("score") is None]
            if known:
                fig.add_trace(trace(known, "uncertainty", color=[p["score"] for p in known], colorscale="Viridis",
                                    showscale=True, colorbar={"title": "entropy", "thickness": 12}))
            if unknown:
                fig.add_trace(trace(unknown, "hidden (blind)", color="#c8ced9"))
        else:
            key = {"prediction": "predicted", "label": "label", "set": "set"}[colour]
            groups: dict[str, list[dict[str, Any]]] = {}
            for p in points:
                groups.setdefault(p.get(key) or (NONE if key == "label" else "—"), []).append(p)
            order = classes + ["unsure", HIDDEN, NONE, "oracle", "estimation", "—"]
            for name in sorted(groups, key=lambda g: order.index(g) if g in order else len(order)):
                colour_of = class_colour(classes, name, OTHER_COLOURS.get(name, "#c8ced9"))
                fig.add_trace(trace(groups[name], f"{name} ({len(groups[name])})", color=colour_of))
        fig.update_xaxes(title=f"{METHOD_NAMES.get(method, method)} 1", showgrid=True, gridcolor="#eef0f4", zeroline=False)
        fig.update_yaxes(title=f"{METHOD_NAMES.get(method, method)} 2", showgrid=True, gridcolor="#eef0f4", zeroline=False)
        return fig

    @app.callback(Output("url", "pathname", allow_duplicate=True), Output("url", "search", allow_duplicate=True),
                  Input("map-graph", "clickData"), State("map-init", "data"), prevent_initial_call=True)
    def open_spectrum(click: dict[str, Any] | None, init: dict[str, Any] | None) -> tuple[Any, Any]:
        if not click or not click.get("points") or not init:
            return no_update, no_update
        index = click["points"][0].get("customdata")
        if index is None:
            return no_update, no_update
        try:
            return ctx.href(f"e/{ctx.experiment_name(init.get('experiment'))}/label"), f"?item={whole(index)}"
        except ApiError:
            return no_update, no_update

    @app.callback(Output("map-chosen", "data"), Output("map-selection", "children"), Output("map-preview", "disabled"),
                  Input("map-graph", "selectedData"), Input("map-include-estimation", "value"),
                  State("map-data", "data"))
    def choose(selected: dict[str, Any] | None, include: list[str], data: dict[str, Any] | None) -> tuple[Any, Any, Any]:
        if not selected or not selected.get("points") or not data:
            return [], "Nothing selected.", True
        sets = {p["index"]: p["set"] for p in data["points"]}
        picked = sorted({int(p["customdata"]) for p in selected["points"] if p.get("customdata") is not None})
        estimation = [i for i in picked if sets.get(i) == "estimation"]
        chosen = picked if include else [i for i in picked if sets.get(i) != "estimation"]
        text = [html.Strong(f"{len(chosen)} spectra selected"),
                f" ({len(picked) - len(estimation)} oracle, {len(estimation)} estimation"
                + ("" if include or not estimation else ", left out") + ")."]
        return chosen, text, not chosen

    @app.callback(Output("map-preview-area", "children"), Output("map-previewed", "data"),
                  Input("map-preview", "n_clicks"), State("map-chosen", "data"), State("map-class", "value"),
                  State("map-data", "data"), prevent_initial_call=True)
    def preview(clicks: int | None, chosen: list[int] | None, label: str | None, data: dict[str, Any] | None) -> tuple[Any, Any]:
        if not clicks or not chosen or not data:
            return no_update, no_update
        try:
            chosen = [whole(i) for i in chosen]
            sample = sorted(random.Random(clicks * 7919 + len(chosen)).sample(chosen, min(PREVIEW, len(chosen))))
            _, dataset = ctx.dataset(data.get("experiment"))
            docs = ctx.client.fluxes(ctx.token(), dataset, sample)
        except ApiError as error:
            return error_box(error, "Preview"), None
        by_index = {p.get("index"): p for p in data.get("points") or []}
        shown = [(docs[i], f"#{i} · {by_index.get(i, {}).get('set')} · pred. {by_index.get(i, {}).get('predicted') or '—'}")
                 for i in sample]
        return html.Div([
            html.P(f"{len(sample)} of the {len(chosen)} selected spectra, drawn at random. Do they all look like "
                   f"{label or 'the class you chose'}?", id="map-preview-text"),
            dcc.Graph(figure=thumbnails(shown, columns=3), config={"displaylogo": False, "displayModeBar": False},
                      id="map-preview-graph"),
            html.P("Preview another random few with the button again.", className="muted"),
        ]), {"key": _selection_key(chosen), "sample": sample}

    @app.callback(Output("map-confirm", "disabled"), Output("map-confirm", "children"),
                  Input("map-chosen", "data"), Input("map-previewed", "data"), Input("map-class", "value"))
    def confirm_state(chosen: list[int] | None, previewed: dict[str, Any] | None, label: str | None) -> tuple[bool, str]:
        if not chosen:
            return True, "Confirm"
        if not previewed or previewed.get("key") != _selection_key(chosen):
            return True, "Confirm (preview first)"
        if not label:
            return True, "Confirm (choose a class)"
        return False, f"Label {len(chosen)} spectra as {label}"

    @app.callback(Output("map-message", "children"), Output("map-reload", "data"),
                  Output("map-previewed", "data", allow_duplicate=True),
                  Input("map-confirm", "n_clicks"), State("map-chosen", "data"), State("map-class", "value"),
                  State("map-previewed", "data"), State("map-data", "data"), prevent_initial_call=True)
    def confirm(clicks: int | None, chosen: list[int] | None, label: str | None, previewed: dict[str, Any] | None,
                data: dict[str, Any] | None) -> tuple[Any, Any, Any]:
        if not clicks or not chosen or not label or not data or dash_ctx.triggered_id != "map-confirm":
            return no_update, no_update, no_update
        if not previewed or previewed.get("key") != _selection_key(chosen):
            return error_box("preview the selection first"), no_update, no_update
        try:
            name = ctx.experiment_name(data.get("experiment"))
            iteration = ctx.current_iteration(name, data.get("iteration"))
            ack = ctx.send("POST", f"/experiments/{name}/iterations/{iteration}/labels/bulk",
                           {"indices": [whole(i) for i in chosen], "label": label, "selection": "lasso"})
        except ApiError as error:
            return error_box(error, "Not labelled"), no_update, no_update
        progress = (ack.get("progress") or {}).get("text", "")
        return html.Div([html.Strong(f"Labelled {len(ack['indices'])} spectra as {label}"),
                         f" (one bulk event by {ack['who']}). {progress}"], className="ok-box", id="map-done"), \
            time.time(), None
