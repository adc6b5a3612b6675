"""'Send to SAMP' in the dashboard: a spectrum to SPLAT, the candidate table to TOPCAT or Aladin.

The SAMP part runs in the browser (``assets/samp.js``), because the SAMP Web Profile hub listens
on the oracle's own machine (``ORACULUM_DASHBOARD_SAMP_HUB``, http://127.0.0.1:21012), which the
dashboard's server cannot reach. What the server adds:

* the button and its status line for a page (:func:`controls`), wired to ``samp.js``;
* the public door to signed links, ``<prefix>_oraculum/shared/...``, forwarded to the API's
  ``/api/v1/shared/...`` *without* any token: the link's signature is the permission (see
  ``oraculum.api.links``). The desktop tool then fetches the spectrum or table from the same
  address the browser uses, which is the one address known to work from that machine.
"""

from __future__ import annotations

import flask
from dash import ClientsideFunction, Dash, Input, Output, State, dcc, html

from .context import Context
from .relay import relay
from .ui import kbd

#: The key that sends the spectrum shown on the labelling page (samp.js; a class hotkey wins).
KEY = "v"


def controls(ctx: Context, scope: str, title: str, key: str | None = None) -> html.Span:
    """A "Send to SAMP" button ``<scope>-samp`` with its status line ``<scope>-samp-status``."""
    label: list[object] = [kbd(key), " Send to SAMP"] if key else ["Send to SAMP"]
    return html.Span([
        dcc.Store(id=f"{scope}-samp-config", data={"hub": ctx.settings.dashboard_samp_hub}),
        html.Button(label, id=f"{scope}-samp", className="key-btn", title=title),
        html.Span("", id=f"{scope}-samp-status", className="samp-status idle", role="status",
                  **{"aria-live": "polite"}),
    ], className="samp")


def register(app: Dash) -> None:
    """The buttons' clientside callbacks (both pages; Dash skips the one whose page is not shown)."""
    app.clientside_callback(ClientsideFunction("oraculum_samp", "send_spectrum"), Output("lab-samp-status", "children"),
                            Input("lab-samp", "n_clicks"), State("lab-samp-config", "data"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("oraculum_samp", "send_table"), Output("perf-samp-status", "children"),
                            Input("perf-samp", "n_clicks"), State("perf-cand-iteration", "value"),
                            State("perf-init", "data"), State("perf-samp-config", "data"), prevent_initial_call=True)


def routes(server: flask.Flask, ctx: Context) -> None:
    """``<prefix>_oraculum/shared/<path>``: a signed link of the API, fetched for a SAMP tool."""

    @server.route(f"{ctx.prefix}_oraculum/shared/<path:path>", endpoint="oraculum_shared")
    def shared(path: str) -> tuple[flask.Response, int] | flask.Response:
        if any(part in ("", ".", "..") for part in path.split("/")):
            return flask.jsonify(detail=f"{path!r} is not a shared link"), 404
        # no Authorization header on purpose: only a valid signature opens these
        return relay(ctx.client, "GET", f"/api/v1/shared/{path}", params=list(flask.request.args.items(multi=True)),
                     keep=("Content-Disposition", "Cache-Control"), default_type="application/octet-stream")
