"""The performance page: the precision estimate of the candidate catalogue per iteration with its
confidence band, the predicted and estimated number of targets in the whole archive, labels per
class, the strategy of each iteration, backtest curves (a ``curves.json`` from
``oraculum backtest``), and the candidates with filters and CSV/VOTable downloads."""

from __future__ import annotations

import base64
import csv
import io
import json
from typing import Any

import plotly.graph_objects as go
from dash import Dash, Input, Output, State, dash_table, dcc, html, no_update
from dash import ctx as dash_ctx

from . import samp
from .client import ApiError
from .context import Context, whole
from .spectra import CLASS_COLOURS
from .ui import card, error_box, experiment_tabs, fmt_estimate

NUMERIC = {"index", "ra", "dec", "obsid", "snr", "probability"}


def layout(ctx: Context, me: dict[str, str], name: str, query: dict[str, str]) -> html.Div:
    return html.Div([
        dcc.Store(id="perf-init", data={"experiment": name}), dcc.Store(id="perf-data"), dcc.Store(id="perf-rows"),
        experiment_tabs(ctx, name, "performance"),
        html.Div(id="perf-error"),
        html.Div(id="perf-summary", className="card"),
        html.Div([
            card("Estimates per iteration (95 % intervals)",
                 dcc.Graph(id="perf-estimate", style={"height": "340px"}, config={"displaylogo": False}),
                 html.Div(id="perf-notes", className="muted")),
            card("Targets in the whole archive", dcc.Graph(id="perf-targets", style={"height": "340px"},
                                                            config={"displaylogo": False})),
        ], style={"display": "grid", "gridTemplateColumns": "repeat(auto-fit, minmax(480px, 1fr))", "gap": "12px"}),
        html.Div([
            card("Labels per class", dcc.Graph(id="perf-classes", style={"height": "300px"},
                                               config={"displaylogo": False})),
            card("Iterations", html.Div(id="perf-iterations")),
        ], style={"display": "grid", "gridTemplateColumns": "repeat(auto-fit, minmax(480px, 1fr))", "gap": "12px"}),
        card("Backtest curves",
             html.P(["Learning curves of a backtest (", html.Code("oraculum backtest ... --out DIR"),
                     " writes DIR/curves.json): drop the file here."], className="muted"),
             dcc.Upload(html.Div(["Drop curves.json or ", html.A("choose it")]), id="perf-backtest-upload",
                        className="upload", accept=".json"),
             html.Div(id="perf-backtest")),
        card("Candidates",
             html.Div([
                 html.Div([html.Label("Iteration"), dcc.Dropdown(id="perf-cand-iteration", clearable=False,
                                                                 style={"minWidth": "140px"})]),
                 html.Div([html.Label("Predicted class"), dcc.Dropdown(id="perf-cand-class", multi=True,
                                                                       placeholder="all target classes",
                                                                       style={"minWidth": "220px"})]),
                 html.Div([html.Label("Probability at least"),
                           dcc.Slider(id="perf-cand-probability", min=0, max=1, step=0.05, value=0,
                                      marks={0: "0", 0.5: "0.5", 0.9: "0.9", 1: "1"},
                                      tooltip={"placement": "bottom"})], style={"minWidth": "260px"}),
                 html.Div([html.Label("S/N at least"), dcc.Input(id="perf-cand-snr", type="number", min=0, value=0,
                                                                 debounce=True, style={"width": "90px"})]),
             ], className="map-controls"),
             html.Div(id="perf-cand-count", className="muted", style={"margin": "6px 0"}),
             dash_table.DataTable(id="perf-cand-table", page_size=15, sort_action="native", filter_action="native",
                                  style_table={"overflowX": "auto"}, style_cell={"fontSize": "13px", "padding": "4px"},
                                  style_header={"fontWeight": "600"}),
             html.Div([
                 html.Button("Download CSV", id="perf-dl-csv"), html.Button("Download VOTable", id="perf-dl-vot"),
                 html.Span("the rows shown by the filters above (all pages)", className="muted"),
                 html.A("full CSV from the API", id="perf-full-csv", href="#", target="_blank"),
                 html.A("full VOTable from the API", id="perf-full-vot", href="#", target="_blank"),
                 samp.controls(ctx, "perf", "Send the iteration's whole candidate table (not only the rows the "
                                            "filters show) to TOPCAT or Aladin through the SAMP hub on this computer"),
             ], className="actions", style={"marginTop": "8px", "alignItems": "center"}),
             dcc.Download(id="perf-download")),
    ], id="perf-root")


def _band(fig: go.Figure, x: list[Any], low: list[Any], high: list[Any], colour: str, name: str) -> None:
    keep = [(a, lo, hi) for a, lo, hi in zip(x, low, high, strict=True) if lo is not None and hi is not None]
    if not keep:
        return
    xs, lows, highs = zip(*keep, strict=True)
    if len(xs) < 2:  # one point has no band: its error bar shows the interval
        return
    fig.add_trace(go.Scatter(x=list(xs) + list(xs)[::-1], y=list(highs) + list(lows)[::-1], fill="toself", mode="lines",
                             fillcolor=colour, line={"width": 0}, hoverinfo="skip", name=name, showlegend=True))


def _error_bars(series: list[dict[str, Any]], colour: str, key: str = "estimate", low: str = "low",
                high: str = "high") -> dict[str, Any]:
    up = [max(0.0, p[high] - p[key]) if p.get(high) is not None and p.get(key) is not None else None for p in series]
    down = [max(0.0, p[key] - p[low]) if p.get(low) is not None and p.get(key) is not None else None for p in series]
    return {"type": "data", "symmetric": False, "array": up, "arrayminus": down, "color": colour, "thickness": 1.5,
            "width": 5}


def _base(fig: go.Figure, x_title: str, y_title: str) -> go.Figure:
    fig.update_layout(margin={"l": 56, "r": 10, "t": 10, "b": 46}, plot_bgcolor="#fff", paper_bgcolor="#fff",
                      legend={"orientation": "h", "y": -0.22}, hovermode="x unified", showlegend=True)
    fig.update_xaxes(title=x_title, showgrid=True, gridcolor="#eef0f4", dtick=1, zeroline=False)
    fig.update_yaxes(title=y_title, showgrid=True, gridcolor="#eef0f4", zeroline=False)
    return fig


def _empty(text: str) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"color": "#888", "size": 14})
    fig.update_layout(plot_bgcolor="#fff", paper_bgcolor="#fff", xaxis={"visible": False}, yaxis={"visible": False},
                      margin={"l": 10, "r": 10, "t": 10, "b": 10})
    return fig


def estimate_figure(points: list[dict[str, Any]], metrics: dict[int, dict[str, Any]] | None = None) -> go.Figure:
    """The precision of the candidate catalogue (the published estimate) and, where a stratified
    sample was drawn, the accuracy over the whole pool, each with its confidence band."""
    metrics = metrics or {}
    precision = [p for p in points if p.get("estimate") is not None]
    accuracy = [{"iteration": k, "labels_total": m.get("labels_total"), **(m.get("accuracy") or {})}
                for k, m in sorted(metrics.items()) if (m.get("accuracy") or {}).get("estimate") is not None]
    if not precision and not accuracy:
        return _empty("No estimate yet: the first one comes with the first iteration that has a network.")
    fig = go.Figure()
    for series, name, colour, band in ((precision, "precision of predicted targets", "#1b3a6b", "rgba(27,58,107,0.18)"),
                                       (accuracy, "accuracy (stratified sample)", "#1e7d4f", "rgba(30,125,79,0.15)")):
        if not series:
            continue
        x = [p["iteration"] for p in series]
        _band(fig, x, [p.get("low") for p in series], [p.get("high") for p in series], band, f"{name}: interval")
        fig.add_trace(go.Scatter(
            x=x, y=[p["estimate"] for p in series], mode="lines+markers", name=name, line={"color": colour, "width": 2},
            marker={"size": 8}, error_y=_error_bars(series, colour), customdata=[[p.get("labels_total"), p.get("low"), p.get("high")] for p in series],
            hovertemplate="iteration %{x}: %{y:.3f} [%{customdata[1]:.3f}, %{customdata[2]:.3f}]"
                          "<br>%{customdata[0]} labels<extra>" + name + "</extra>"))
    fig = _base(fig, "iteration", "estimate")
    fig.update_yaxes(range=[0, 1.02])
    return fig


def targets_figure(points: list[dict[str, Any]]) -> go.Figure:
    if not any(p.get("predicted_targets") is not None or p.get("estimated_targets") is not None for p in points):
        return _empty("No target counts yet.")
    x = [p["iteration"] for p in points]
    fig = go.Figure()
    _band(fig, x, [p.get("estimated_targets_low") for p in points], [p.get("estimated_targets_high") for p in points],
          "rgba(192,57,43,0.15)", "interval of the estimate")
    fig.add_trace(go.Scatter(x=x, y=[p.get("estimated_targets") for p in points], mode="lines+markers",
                             name="estimated true targets", line={"color": "#c0392b", "width": 2},
                             error_y=_error_bars(points, "#c0392b", "estimated_targets", "estimated_targets_low",
                                                 "estimated_targets_high")))
    fig.add_trace(go.Scatter(x=x, y=[p.get("predicted_targets") for p in points], mode="lines+markers",
                             name="predicted as targets", line={"color": "#1b3a6b", "width": 2, "dash": "dot"}))
    return _base(fig, "iteration", "spectra in the archive")


def classes_figure(metrics: dict[int, dict[str, Any]], classes: list[str]) -> go.Figure:
    if not metrics:
        return _empty("No evaluated iteration yet.")
    ks = sorted(metrics)
    names = list(dict.fromkeys(classes + [c for k in ks for c in (metrics[k].get("labels_so_far") or {})]))
    fig = go.Figure()
    for position, name in enumerate(names):
        fig.add_trace(go.Bar(x=ks, y=[(metrics[k].get("labels_so_far") or {}).get(name, 0) for k in ks], name=name,
                             marker={"color": CLASS_COLOURS[position % len(CLASS_COLOURS)] if name in classes
                                     else "#b8b8b8"}))
    fig.update_layout(barmode="stack")
    return _base(fig, "iteration", "labels so far")


def backtest_figure(document: dict[str, Any]) -> go.Figure:
    fig = go.Figure()
    strategies = document.get("strategies") or {}
    for position, (strategy, points) in enumerate(strategies.items()):
        colour = CLASS_COLOURS[position % len(CLASS_COLOURS)]
        rgb = tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))
        x = [p.get("labels") for p in points]
        _band(fig, x, [p.get("low") for p in points], [p.get("high") for p in points],
              f"rgba({rgb[0]},{rgb[1]},{rgb[2]},0.12)", f"{strategy}: interval")
        fig.add_trace(go.Scatter(x=x, y=[p.get("estimate") for p in points], mode="lines+markers",
                                 name=f"{strategy}: estimate", line={"color": colour}))
        if any(p.get("true") is not None for p in points):
            fig.add_trace(go.Scatter(x=x, y=[p.get("true") for p in points], mode="lines", name=f"{strategy}: true",
                                     line={"color": colour, "dash": "dot"}))
    fig = _base(fig, "training labels", "precision of predicted targets")
    fig.update_xaxes(dtick=None)
    return fig


def parse_csv(text: str) -> dict[str, Any]:
    """The API's candidates.csv as {"columns": [...], "rows": [{...}, ...]} with numbers as numbers."""
    reader = csv.DictReader(io.StringIO(text))
    rows = []
    for row in reader:
        out: dict[str, Any] = {}
        for key, value in row.items():
            if key in NUMERIC and value not in (None, ""):
                try:
                    out[key] = int(value) if key in ("index", "obsid") else float(value)
                except ValueError:
                    out[key] = value
            else:
                out[key] = value
        rows.append(out)
    return {"columns": list(reader.fieldnames or []), "rows": rows}


def votable_bytes(rows: list[dict[str, Any]], columns: list[str], description: str) -> bytes:
    from astropy.io.votable import from_table
    from astropy.table import Table

    from oraculum.vo.votable import votable_bytes as write_votable

    table = Table(rows=[[row.get(c) for c in columns] for row in rows], names=columns) if rows else \
        Table(names=columns, dtype=[str] * len(columns))
    table.meta["description"] = description
    return write_votable(from_table(table))  # never astropy's faulty C TABLEDATA writer (see there)


def register(app: Dash, ctx: Context) -> None:
    @app.callback(Output("perf-data", "data"), Output("perf-error", "children"), Input("perf-init", "data"))
    def load(init: dict[str, Any] | None) -> tuple[Any, Any]:
        if not init:
            return no_update, no_update
        token = ctx.token()
        try:
            name = ctx.experiment_name(init.get("experiment"))
            detail = ctx.get(f"/experiments/{name}")
            curves = ctx.get(f"/experiments/{name}/curves")
            iterations = ctx.get(f"/experiments/{name}/iterations")
        except ApiError as error:
            return None, error_box(error, "Experiment")
        evaluated = [i["iteration"] for i in iterations["iterations"] if i.get("evaluated")]

        def metrics(k: int) -> tuple[int, dict[str, Any] | None]:
            try:
                return k, ctx.client.get(f"/experiments/{name}/iterations/{k}/metrics", token)["metrics"]
            except ApiError:
                return k, None

        found = {k: m for k, m in ctx.client.pool.map(metrics, evaluated) if m is not None}
        classes = [c.get("name") for c in (detail.get("spec") or {}).get("classes") or []]
        targets = [c.get("name") for c in (detail.get("spec") or {}).get("classes") or [] if c.get("target")]
        return {"experiment": name, "detail": {k: detail.get(k) for k in ("phase", "iteration", "message", "spec")},
                "curves": curves["points"], "iterations": iterations["iterations"], "metrics": found,
                "classes": classes, "targets": targets}, None

    @app.callback(Output("perf-summary", "children"), Output("perf-estimate", "figure"), Output("perf-targets", "figure"),
                  Output("perf-classes", "figure"), Output("perf-iterations", "children"),
                  Output("perf-cand-iteration", "options"), Output("perf-cand-iteration", "value"),
                  Output("perf-cand-class", "options"), Output("perf-notes", "children"),
                  Input("perf-data", "data"))
    def draw(data: dict[str, Any] | None) -> tuple[Any, ...]:
        if not data:
            return (no_update,) * 9
        points = data["curves"]
        metrics = {int(k): v for k, v in (data.get("metrics") or {}).items()}
        spec = data["detail"].get("spec") or {}
        latest = next((p for p in reversed(points) if p.get("estimate") is not None), None)
        summary = html.Div([
            html.Span([html.Strong("Phase "), data["detail"].get("phase") or "—"]), " · ",
            html.Span([html.Strong("iteration "), str(data["detail"].get("iteration"))]), " · ",
            html.Span([html.Strong("strategy "), str((spec.get("acquisition") or {}).get("strategy", "—"))]), " · ",
            html.Span([html.Strong("targets "), ", ".join(data["targets"]) or "—"]), " · ",
            html.Span([html.Strong("latest precision "),
                       fmt_estimate(latest["estimate"], latest.get("low"), latest.get("high")) + f" (iteration "
                       f"{latest['iteration']})" if latest else "not estimable yet"], id="perf-latest"),
        ])
        rows = []
        for entry in data["iterations"]:
            k = entry["iteration"]
            m = metrics.get(k) or {}
            count = m.get("estimated_target_count") or {}
            rows.append(html.Tr([
                html.Td(str(k)), html.Td(m.get("strategy") or "—"), html.Td(str(m.get("labels_total", "—"))),
                html.Td(f"{entry['labelled']} / {entry.get('size')}" if entry.get("labelled") is not None
                        else f"open ({entry.get('size')})"),
                html.Td(fmt_estimate(entry.get("estimate"), entry.get("low"), entry.get("high"))),
                html.Td(str(m.get("predicted_target_count", "—"))),
                html.Td(fmt_estimate(count.get("estimate"), count.get("low"), count.get("high"))
                        if count.get("estimate") is not None else "—"),
                html.Td("yes" if entry.get("submitted") else "no"),
            ]))
        table = html.Table([html.Thead(html.Tr([html.Th(h) for h in ("It.", "Strategy", "Labels", "Batch labelled",
                                                                      "Precision", "Predicted targets",
                                                                      "Estimated targets", "Submitted")])),
                            html.Tbody(rows)], className="grid", id="perf-iteration-table")
        candidate_iterations = [e["iteration"] for e in data["iterations"]]
        options = [{"label": f"iteration {k}", "value": k} for k in reversed(candidate_iterations)]
        value = candidate_iterations[-1] if candidate_iterations else None
        last = metrics[max(metrics)] if metrics else {}
        notes = [f"Iteration {max(metrics)}: {note}" for note in last.get("notes") or []] if metrics else []
        return (summary, estimate_figure(points, metrics), targets_figure(points), classes_figure(metrics, data["classes"]),
                table, options, value, [{"label": c, "value": c} for c in data["targets"]],
                [html.Div(n) for n in notes])

    @app.callback(Output("perf-backtest", "children"), Input("perf-backtest-upload", "contents"),
                  State("perf-backtest-upload", "filename"), prevent_initial_call=True)
    def backtest(contents: str | None, filename: str | None) -> Any:
        if not contents:
            return no_update
        try:
            document = json.loads(base64.b64decode(contents.partition(",")[2]).decode("utf-8"))
            if not isinstance(document, dict) or not isinstance(document.get("strategies"), dict):
                raise TypeError("no 'strategies' in it")
        except (ValueError, TypeError, UnicodeDecodeError) as error:
            return error_box(f"{filename}: not a backtest curves.json ({error})")
        notes = [document[key] for key in ("note", "notes") if isinstance(document.get(key), str)]
        return html.Div([dcc.Graph(figure=backtest_figure(document), id="perf-backtest-graph",
                                   config={"displaylogo": False}),
                         html.P(" ".join(notes), className="muted") if notes else None])

    @app.callback(Output("perf-rows", "data"), Output("perf-full-csv", "href"), Output("perf-full-vot", "href"),
                  Input("perf-cand-iteration", "value"), State("perf-init", "data"), prevent_initial_call=True)
    def candidates(iteration: int | None, init: dict[str, Any] | None) -> tuple[Any, Any, Any]:
        if iteration is None or not init:
            return {"columns": [], "rows": []}, "#", "#"
        try:
            name, iteration = ctx.experiment_name(init.get("experiment")), whole(iteration, "iteration")
            base = ctx.href(f"_oraculum/api/v1/experiments/{name}/iterations/{iteration}/candidates")
            text = ctx.client.request("GET", f"/experiments/{name}/iterations/{iteration}/candidates.csv",
                                      ctx.token()).text
        except ApiError as error:
            return {"error": str(error)}, "#", "#"
        return parse_csv(text), base + ".csv", base + ".vot"

    @app.callback(Output("perf-cand-table", "data"), Output("perf-cand-table", "columns"),
                  Output("perf-cand-count", "children"),
                  Input("perf-rows", "data"), Input("perf-cand-class", "value"), Input("perf-cand-probability", "value"),
                  Input("perf-cand-snr", "value"))
    def filtered(rows: Any, classes: list[str] | None, probability: float | None, snr: float | None) -> tuple[Any, ...]:
        if isinstance(rows, dict) and rows.get("error"):
            return [], [], rows["error"]
        columns = (rows or {}).get("columns") or []
        rows = (rows or {}).get("rows") or []
        shown = [r for r in rows
                 if (not classes or r.get("predicted") in classes)
                 and (r.get("probability") is None or isinstance(r.get("probability"), str)
                      or r["probability"] >= (probability or 0))
                 and (not snr or (isinstance(r.get("snr"), float) and r["snr"] >= snr))]
        spec = [{"name": c, "id": c, "type": "numeric" if c in NUMERIC else "text"} for c in columns]
        count = f"{len(shown)} of {len(rows)} candidates" if rows else \
            "No candidates in this iteration (nothing predicted as a target, or a cold start)."
        return shown, spec, count

    @app.callback(Output("perf-download", "data"), Input("perf-dl-csv", "n_clicks"), Input("perf-dl-vot", "n_clicks"),
                  State("perf-cand-table", "derived_virtual_data"), State("perf-cand-table", "columns"),
                  State("perf-init", "data"), State("perf-cand-iteration", "value"), prevent_initial_call=True)
    def download(csv_clicks: int | None, vot_clicks: int | None, rows: list[dict[str, Any]] | None,
                 columns: list[dict[str, Any]] | None, init: dict[str, Any] | None, iteration: int | None) -> Any:
        if not init or iteration is None:
            return no_update
        try:  # the file's name comes from the page: only a listed experiment and a number
            name, iteration = ctx.experiment_name(init.get("experiment")), whole(iteration, "iteration")
        except ApiError:
            return no_update
        names = [c["id"] for c in columns or []]
        rows = rows or []
        stem = f"{name}-iteration-{iteration}-candidates"
        if dash_ctx.triggered_id == "perf-dl-vot":
            description = (f"oraculum dashboard: candidates of experiment {name}, iteration {iteration} "
                           f"({len(rows)} rows after the dashboard's filters)")
            return dcc.send_bytes(votable_bytes(rows, names, description), f"{stem}.vot")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=names, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return dcc.send_string(buffer.getvalue(), f"{stem}.csv")
