"""The labelling page: one spectrum at a time, large, keyboard first.

The server side loads the batch and the spectra through the API; everything that must be
instant (keys, moving on, drawing the next spectrum, counting progress, queueing labels) runs in
the browser (``assets/oraculum.js``: ``oraculum.label_render`` and the outbox). Details that may
follow a moment later come from callbacks here: metadata and links, the raw archive spectrum,
the nearest already-labelled spectra of each class, and the submission.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

from dash import ALL, Dash, Input, Output, State, dcc, html, no_update

from . import samp
from .client import ApiError
from .context import Context, allows, whole
from .spectra import Neighbours, compact, line_markers, neighbours_figure
from .ui import card, error_box, experiment_tabs, kbd

UNSURE = "unsure"
#: Keys the page itself uses; a class hotkey among them still labels (shown as a warning).
COMMAND_KEYS = {"ArrowLeft": "previous spectrum", "ArrowRight": "next spectrum", "n": "next unlabelled spectrum",
                "z": "undo the last label", "s": "smoothing on/off", "f": "full raw spectrum from the archive on/off",
                "r": "reset zoom", "c": "write a comment (Enter saves it, Esc leaves)",
                samp.KEY: "send the spectrum shown to SAMP tools (SPLAT, TOPCAT)", "?": "this help"}
#: Send every spectrum of a batch to the browser at once up to this many numbers, else a window.
PREFETCH_ALL_NUMBERS = 120_000
WINDOW = 24


def keymap(classes: list[dict[str, Any]]) -> dict[str, str]:
    """Key -> label: each class's hotkey (digits 1, 2, ... in order where none is given), u = unsure."""
    keys: dict[str, str] = {}
    taken = {str(c.get("hotkey")) for c in classes if c.get("hotkey")}
    spare = (str(d) for d in range(1, 10) if str(d) not in taken)
    for entry in classes:
        key = str(entry.get("hotkey") or next(spare, "") or "")
        if key and key not in keys:
            keys[key] = entry["name"]
    keys.setdefault("u", UNSURE)
    return keys


def layout(ctx: Context, me: dict[str, str], name: str, query: dict[str, str]) -> html.Div:
    try:
        item = int(query.get("item", "")) if query.get("item") else None
    except ValueError:
        item = None
    commands = [("ArrowLeft", "prev"), ("ArrowRight", "next"), ("n", "next unlabelled"), ("z", "undo"),
                ("s", "smoothing"), ("f", "full spectrum"), ("r", "reset zoom"), ("?", "help")]
    return html.Div([
        dcc.Store(id="lab-init", data={"experiment": name, "item": item}),
        dcc.Store(id="lab-data"), dcc.Store(id="lab-flux"), dcc.Store(id="lab-state", storage_type="session"),
        dcc.Store(id="lab-key"), dcc.Store(id="lab-saved"), dcc.Store(id="lab-raw"), dcc.Store(id="lab-current"),
        dcc.Store(id="lab-want"), dcc.Store(id="lab-remote"), dcc.Store(id="lab-sky-url"), dcc.Store(id="lab-sky-done"),
        dcc.Store(id="lab-raw-want"),
        experiment_tabs(ctx, name, "label"),
        html.Div(id="lab-error"),
        html.Div("", id="lab-banner", className="banner hidden"),
        html.Div([
            html.Div([html.Div("loading the batch…", id="lab-title", className="lab-title"),
                      html.Div("", id="lab-position", className="lab-sub")]),
            html.Div([html.Div("", id="lab-progress-text", className="text"),
                      html.Div([html.Div(html.Div(id="lab-progress-oracle", className="fill"), className="bar",
                                         title="oracle batch"),
                                html.Div(html.Div(id="lab-progress-est", className="fill est"), className="bar",
                                         title="estimation sample")], className="bars")], className="lab-progress"),
            html.Div("", id="lab-status", className="save-status idle", role="status", **{"aria-live": "polite"}),
            html.Button("Submit batch", id="lab-submit", className="primary", disabled=True,
                        title="Enabled once every spectrum of the batch is labelled and saved"),
        ], className="lab-head"),
        html.Div(id="lab-submit-msg"),
        html.Div([
            html.Div([
                card(None, dcc.Graph(id="lab-graph", config={
                    "displaylogo": False, "scrollZoom": True, "doubleClick": "reset",
                    "modeBarButtonsToRemove": ["select2d", "lasso2d", "autoScale2d"],
                    "toImageButtonOptions": {"format": "png", "scale": 2}}), className="graph-card"),
                html.Div([html.Button([kbd(key), " ", text], id={"type": "lab-btn", "key": key}, className="key-btn")
                          for key, text in commands]
                         + [html.Button("retry saving now", id={"type": "lab-btn", "key": "retry"}, className="key-btn")]
                         + [samp.controls(ctx, "lab", "Send the spectrum shown (preprocessed, or raw with f) to SPLAT, "
                                                       "TOPCAT... through the SAMP hub on this computer", samp.KEY)],
                         className="keys", id="lab-commands"),
            ]),
            html.Aside([
                card("Label", html.Div("", id="lab-labelled", className="labelled-as"),
                     html.Div(id="lab-classes", className="class-buttons"),
                     html.Label(["Comment ", html.Span(["(", kbd("c"), " to write, Enter to save)"], className="muted")],
                                htmlFor="lab-comment", style={"display": "block", "marginTop": "10px"}),
                     dcc.Textarea(id="lab-comment", placeholder="e.g. weak emission in the wing; check the raw file",
                                  maxLength=2000)),
                card("Network", html.Div(id="lab-probs")),
                card("Spectrum", html.Div(id="lab-meta")),
                card("Sky", html.Div(id="lab-sky")),
            ]),
        ], className="lab-main"),
        card("Nearest labelled spectra of each class",
             dcc.Graph(id="lab-neighbours", config={"displaylogo": False, "displayModeBar": False},
                       style={"height": "210px"}),
             html.Div(id="lab-neighbours-note", className="muted")),
        html.Div(html.Div([
            html.H2("Keys"),
            html.Table(html.Tbody(id="lab-help-keys")),
            html.P([("Labels are saved on each key press; if a save fails it is shown at the top and "
                     "retried, and nothing is lost on reload. "), kbd("Esc"), " or ", kbd("?"), " closes this."],
                   className="muted"),
        ], className="dialog"), id="lab-help", className="modal", style={"display": "none"}),
    ], id="lab-root")


def _help_rows(keys: dict[str, str]) -> list[html.Tr]:
    rows = [html.Tr([html.Td(kbd(key)), html.Td(f"label as {label}")]) for key, label in keys.items()]
    rows += [html.Tr([html.Td(kbd(key)), html.Td(text)]) for key, text in COMMAND_KEYS.items()]
    return rows


def _class_buttons(classes: list[dict[str, Any]], keys: dict[str, str]) -> list[html.Button]:
    targets = {c["name"] for c in classes if c.get("target")}
    buttons = []
    for key, label in keys.items():
        buttons.append(html.Button([kbd(key), " ", label], id={"type": "lab-btn", "key": key},
                                   className="key-btn" + (" target" if label in targets else ""),
                                   title=f"label as {label} (key {key})"))
    return buttons


def _sexagesimal(ra: float, dec: float) -> str:
    hours = ra / 15.0
    h, m = int(hours), int((hours % 1) * 60)
    s = ((hours * 60) % 1) * 60
    sign = "-" if dec < 0 else "+"
    d = abs(dec)
    dd, dm = int(d), int((d % 1) * 60)
    ds = ((d * 60) % 1) * 60
    return f"{h:02d}h{m:02d}m{s:05.2f}s {sign}{dd:02d}°{dm:02d}′{ds:04.1f}″"


def register(app: Dash, ctx: Context) -> None:
    neighbours = Neighbours(ctx.client)

    @app.callback(Output("lab-data", "data"), Output("lab-flux", "data"), Output("lab-classes", "children"),
                  Output("lab-help-keys", "children"), Output("lab-error", "children"),
                  Input("lab-init", "data"))
    def load(init: dict[str, Any] | None) -> tuple[Any, ...]:
        if not init:
            return (no_update,) * 5
        token = ctx.token()
        try:
            me = ctx.me()
            name = ctx.experiment_name(init.get("experiment"))
            detail = ctx.get(f"/experiments/{name}")
        except ApiError as error:
            return None, None, None, None, error_box(error, "Experiment")
        phase = detail.get("phase", "Pending")
        try:
            batch = ctx.get(f"/experiments/{name}/batch")
        except ApiError as error:
            if error.status != 404:
                return None, None, None, None, error_box(error, "The batch cannot be loaded")
            waiting = {"experiment": name, "items": [], "waiting": True, "phase": phase, "loaded_at": time.time()}
            note = html.Div([html.Strong(f"No batch to label yet: the experiment is {phase}"),
                             f" ({detail.get('message') or 'iteration ' + str(detail.get('iteration'))}). ",
                             "This page opens the batch by itself when it is ready."], className="info-box",
                            id="lab-waiting")
            return waiting, None, None, None, note
        items = batch["items"]
        classes = batch.get("classes") or []
        keys = keymap(classes)
        labels = {str(item["index"]): item["label"] for item in items if item.get("label")}
        start_index = init.get("item")
        if start_index not in {item["index"] for item in items}:
            start_index = next((item["index"] for item in items if not item.get("label")),
                               items[0]["index"] if items else None)
        fluxes: dict[str, Any] = {}
        grid: dict[str, Any] = {"wavelength": [], "medium": "vacuum", "normalisation": ""}
        if items:
            try:
                first = ctx.client.flux(token, batch["dataset"], int(start_index))
                grid = {"wavelength": first["wavelength"], "medium": first["medium"],
                        "normalisation": first.get("normalisation", "")}
                order = [item["index"] for item in items]
                if len(order) * max(1, len(first["wavelength"])) <= PREFETCH_ALL_NUMBERS:
                    wanted = order
                else:
                    at = order.index(start_index) if start_index in order else 0
                    wanted = order[max(0, at - 2): at + WINDOW]
                for index, document in ctx.client.fluxes(token, batch["dataset"], wanted).items():
                    fluxes[str(index)] = compact(document["flux"])
            except ApiError as error:
                return None, None, None, None, error_box(error, "The spectra cannot be loaded")
        progress = batch.get("progress") or {}
        can_label = allows(me.get("role"), "oracle") and phase not in ("Succeeded", "Failed")
        data = {
            "experiment": name, "iteration": batch["iteration"], "dataset": batch["dataset"],
            "strategy": batch.get("strategy"), "cold_start": batch.get("cold_start"), "blind": batch.get("blind"),
            "classes": classes, "keys": keys, "labels": labels, "items": [
                {k: item.get(k) for k in ("index", "id", "set", "reason", "score", "predicted", "probabilities",
                                          "prediction_hidden", "lock")} for item in items],
            **grid, **line_markers(), "progress": progress, "submitted": bool(progress.get("submitted")),
            "me": me, "can_label": can_label, "phase": phase, "item": init.get("item"), "loaded_at": time.time(),
        }
        warnings = [key for key in keys if key in COMMAND_KEYS]
        note = html.Div(f"Class hotkeys {', '.join(warnings)} shadow page keys of the same name.",
                        className="info-box") if warnings else None
        if phase in ("Succeeded", "Failed"):
            note = html.Div(f"The experiment has {phase.lower()}: this batch is shown read-only.", className="info-box")
        elif not allows(me.get("role"), "oracle"):
            note = html.Div(f"{me['name']} is a {me['role']}: you can look, not label.", className="info-box")
        return data, fluxes, _class_buttons(classes, keys), _help_rows(keys), note

    @app.callback(Output("lab-flux", "data", allow_duplicate=True), Input("lab-want", "data"), prevent_initial_call=True)
    def prefetch(want: dict[str, Any] | None) -> Any:
        if not want or not isinstance(want.get("indices"), list) or not want["indices"]:
            return no_update
        try:
            _, dataset = ctx.dataset(want.get("experiment"))
            found = ctx.client.fluxes(ctx.token(), dataset, [whole(i) for i in want["indices"][:64]])
        except ApiError:
            return no_update
        return {str(index): compact(document["flux"]) for index, document in found.items()}

    app.clientside_callback(
        "function () { return window.dash_clientside.oraculum.label_render.apply(null, arguments); }",
        Output("lab-state", "data"), Output("lab-graph", "figure"), Output("lab-title", "children"),
        Output("lab-position", "children"), Output("lab-labelled", "children"), Output("lab-progress-text", "children"),
        Output("lab-progress-oracle", "style"), Output("lab-progress-est", "style"), Output("lab-submit", "disabled"),
        Output("lab-submit", "children"), Output("lab-probs", "children"), Output("lab-want", "data"), Output("lab-help", "style"), Output("lab-status", "children"),
        Output("lab-status", "className"), Output("lab-banner", "children"), Output("lab-banner", "className"),
        Output("lab-comment", "value"), Output({"type": "lab-btn", "key": ALL}, "className"),
        Input("lab-key", "data"), Input("lab-data", "data"), Input("lab-flux", "data"), Input("lab-saved", "data"),
        Input("lab-raw", "data"), Input("lab-remote", "data"), Input("lab-graph", "relayoutData"),
        Input({"type": "lab-btn", "key": ALL}, "n_clicks"), State("lab-state", "data"),
    )

    # The details and the neighbours arrive a moment after the spectrum (they wait until the oracle
    # rests on it); until then oraculum.js marks both cards "stale" (dimmed, with the spectrum they
    # belong to), so a metadata panel is never read as the new spectrum's. Answering clears the mark.
    @app.callback(Output("lab-meta", "children"), Output("lab-meta", "className"), Output("lab-sky", "children"),
                  Output("lab-sky-url", "data"), Input("lab-current", "data"), prevent_initial_call=True)
    def details(current: dict[str, Any] | None) -> tuple[Any, Any, Any, Any]:
        if not current:
            return no_update, no_update, no_update, no_update
        try:
            _, dataset = ctx.dataset(current.get("experiment"))
            info = ctx.get(f"/datasets/{dataset}/spectra/{whole(current.get('index'))}")
        except ApiError as error:
            return error_box(error), "fresh", None, None
        meta, links = info.get("meta") or {}, info.get("links") or {}
        ra, dec = meta.get("ra"), meta.get("dec")
        rows: list[tuple[str, Any]] = [("id", html.Span(info.get("id"), className="mono")),
                                       ("index", f"{info.get('index')} in {dataset}")]
        if meta.get("designation"):
            rows.append(("designation", meta["designation"]))
        if ra is not None and dec is not None:
            rows.append(("RA, Dec", html.Span([f"{ra:.6f}°, {dec:+.6f}°", html.Br(), _sexagesimal(ra, dec)],
                                               className="mono")))
        for key, title in (("obsid", "obsid"), ("snr", "S/N"), ("mjd", "MJD"), ("header_class", "archive class"),
                           ("subclass", "subclass"), ("object_name", "object"), ("format", "format"),
                           ("source_key", "file")):
            value = meta.get(key)
            if value not in (None, ""):
                rows.append((title, f"{value:.1f}" if key == "snr" and isinstance(value, float) else str(value)))
        link_items: list[Any] = []
        if links.get("archive"):
            link_items.append(html.A("archive page ↗", href=links["archive"], target="_blank", rel="noopener noreferrer",
                                     id="lab-link-archive"))
        if links.get("simbad"):
            link_items.append(html.A("SIMBAD ↗", href=links["simbad"], target="_blank", rel="noopener noreferrer",
                                     id="lab-link-simbad"))
        sky_url = None
        if ra is not None and dec is not None:
            sky_url = ctx.settings.dashboard_sky_url.format(ra=f"{ra:.6f}", dec=quote(f"{dec:+.6f}"))
            link_items.append(html.A("Aladin Lite ↗", href=sky_url, target="_blank", rel="noopener noreferrer",
                                     id="lab-link-aladin"))
        meta_view = html.Div([html.Dl([part for title, value in rows for part in (html.Dt(title), html.Dd(value))],
                                      className="meta"), html.Div(link_items, className="links")])
        if sky_url:
            sky = html.Div([
                html.P("Aladin Lite needs the internet in this browser: it is loaded only when asked, and the page "
                       "says so when it cannot be reached.", className="muted"),
                html.Button("Show the sky here", id="lab-sky-show"),
                html.Div("", id="lab-sky-note", className="muted"),
                html.Iframe(id="lab-sky-frame", style={"display": "none"}, title="Aladin Lite sky view",
                            referrerPolicy="no-referrer"),
            ])
        else:
            sky = html.P("No coordinates for this spectrum.", className="muted")
        return meta_view, "fresh", sky, sky_url

    app.clientside_callback(
        "function (clicks, url) { return window.dash_clientside.oraculum.sky(clicks, url ? {sky: url} : null); }",
        Output("lab-sky-done", "data"), Input("lab-sky-show", "n_clicks"), State("lab-sky-url", "data"),
        prevent_initial_call=True)

    @app.callback(Output("lab-raw", "data"), Input("lab-raw-want", "data"), prevent_initial_call=True)
    def raw(current: dict[str, Any] | None) -> Any:
        if not current or not current.get("raw"):
            return no_update
        try:
            index = whole(current.get("index"))
            _, dataset = ctx.dataset(current.get("experiment"))
            document = ctx.get(f"/datasets/{dataset}/spectra/{index}/raw", max_points=6000)
        except ApiError as error:
            return {"index": current.get("index"), "error": str(error)}
        return {"index": index, "wavelength": compact(document["wavelength"], 3), "flux": compact(document["flux"], 6),
                "medium": document.get("medium", "vacuum"), "points": document.get("points"),
                "decimated": document.get("decimated"), "format": document.get("format")}

    @app.callback(Output("lab-neighbours", "figure"), Output("lab-neighbours-note", "children"),
                  Output("lab-neighbours", "className"), Input("lab-current", "data"), prevent_initial_call=True)
    def nearest(current: dict[str, Any] | None) -> tuple[Any, Any, Any]:
        if not current:
            return no_update, no_update, no_update
        classes = [str(c) for c in current.get("classes") or []][:32]  # compared with labels, never a path
        try:
            name, dataset = ctx.dataset(current.get("experiment"))
            this, found = neighbours.nearest(ctx.token() or "", name, dataset, whole(current.get("index")), classes)
        except ApiError as error:
            return {}, error_box(error, "Nearest labelled spectra"), "fresh"
        counted = ", ".join(f"{c}: {hit['labelled'] if hit else 0}" for c, hit in found.items())
        note = (f"Closest by rms flux difference on the preprocessed grid among the labelled spectra of every "
                f"iteration ({counted}; up to {neighbours.cap} most recent per class compared).")
        return neighbours_figure(this, found, classes), note, "fresh"

    @app.callback(Output("lab-submit-msg", "children"), Output("lab-remote", "data", allow_duplicate=True),
                  Input("lab-submit", "n_clicks"), State("lab-init", "data"), State("lab-data", "data"),
                  prevent_initial_call=True)
    def submit(clicks: int | None, init: dict[str, Any] | None, data: dict[str, Any] | None) -> tuple[Any, Any]:
        if not clicks or not init or not data or not data.get("items"):
            return no_update, no_update
        try:
            name = ctx.experiment_name(init.get("experiment"))
            iteration = ctx.current_iteration(name, data.get("iteration"))
            answer = ctx.send("POST", f"/experiments/{name}/iterations/{iteration}/submit")
        except ApiError as error:
            return error_box(error, "Not submitted"), no_update
        me = ctx.me()
        message = html.Div([html.Strong(f"Batch {iteration} submitted"),
                            (f" ({answer.get('labelled')} / {answer.get('size')} labelled). The network is retrained "
                             "now; this page opens the next batch by itself when it is ready.")],
                           className="ok-box", id="lab-submitted")
        return message, {"type": "labels-submitted", "data": {"iteration": iteration, "who": me["name"]},
                         "n": time.time()}
