"""Send a spectrum or a candidate table from a notebook to SPLAT, TOPCAT or Aladin, over SAMP::

    from oraculum.client.rest import Client
    from oraculum.client import samp

    api = Client("http://127.0.0.1:8000", token="...")
    samp.send_spectrum(api, "pool", 17)              # SPLAT shows spectrum 17 of dataset pool
    samp.send_spectrum(api, "pool", 17, raw=True)    # the archive file's full range instead
    samp.send_candidates(api, "exp", to="topcat")    # the current iteration's candidates, to TOPCAT only

The desktop tools fetch what they are sent themselves, without the API's token, so the API signs a
short-lived link to exactly that object (``GET .../share``, see ``oraculum.api.links``) and hands
back the whole SAMP message; this module only connects to the hub (astropy's SAMP client, the
standard profile: the hub's lock file, ``~/.samp`` or ``SAMP_HUB``; pyvo's SAMP package, the
successor of ``astropy.samp``) and sends it to every
application subscribed to the message type, or to those whose name contains ``to``. The API must
be reachable from the desktop tools at the client's URL (a port-forward counts).
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from oraculum.client.rest import Client

__all__ = ["SPECTRUM_MTYPE", "TABLE_MTYPE", "SampError", "candidates_message", "send", "send_candidates",
           "send_spectrum", "spectrum_message"]

#: The SAMP message types (https://www.ivoa.net/documents/SAMP/ MTypes): load a spectrum by URL
#: with SSA metadata, and load a VOTable by URL.
SPECTRUM_MTYPE = "spectrum.load.ssa-generic"
TABLE_MTYPE = "table.load.votable"
#: What the tools are called, to say which one to start when none listens.
TOOLS = {SPECTRUM_MTYPE: "SPLAT or TOPCAT", TABLE_MTYPE: "TOPCAT or Aladin"}


def samp_library() -> ModuleType:
    """pyvo's SAMP package (astropy.samp moved there; astropy 8 deprecates its own), else astropy's."""
    try:
        import pyvo.samp

        if hasattr(pyvo.samp, "SAMPIntegratedClient"):
            return pyvo.samp
    except ImportError:  # an older pyvo, without the package
        pass
    import astropy.samp

    return astropy.samp


class SampError(RuntimeError):
    """The message could not be delivered; the text says why and what to start."""


def spectrum_message(api: Client, dataset: str, index: int, *, raw: bool = False,
                     format: Literal["fits", "votable"] = "fits", seconds: int | None = None) -> dict[str, Any]:
    """The ``spectrum.load.ssa-generic`` message for one spectrum, with a signed link from the API."""
    return _shared(api, f"/datasets/{dataset}/spectra/{int(index)}/share", seconds,
                   variant="raw" if raw else "preprocessed", format=format)


def candidates_message(api: Client, experiment: str, iteration: int | None = None,
                       seconds: int | None = None) -> dict[str, Any]:
    """The ``table.load.votable`` message for an iteration's candidates (default: the current one)."""
    k = api.current_iteration(experiment) if iteration is None else int(iteration)
    return _shared(api, f"/experiments/{experiment}/iterations/{k}/candidates/share", seconds)


def _shared(api: Client, path: str, seconds: int | None, **params: Any) -> dict[str, Any]:
    """The SAMP message of the API's share answer at ``path`` (the link valid ``seconds``, else
    the API's default)."""
    if seconds is not None:
        params["seconds"] = int(seconds)
    share = api.request("GET", path, params=params).json()
    return {"samp.mtype": share["mtype"], "samp.params": share["params"]}


def send(message: dict[str, Any], *, to: str | None = None, hub: Any = None, name: str = "oraculum") -> list[str]:
    """Send ``message`` to every application subscribed to its MType (or those whose ``samp.name``
    contains ``to``, case-insensitive); returns their names. ``hub``: a ``SAMPHubServer``
    or ``SAMPHubProxy`` to use instead of the one the lock file names."""
    lib = samp_library()
    SAMPClientError, SAMPHubError, SAMPProxyError = lib.SAMPClientError, lib.SAMPHubError, lib.SAMPProxyError  # noqa: N806
    mtype = str(message.get("samp.mtype", ""))
    client = lib.SAMPIntegratedClient(name=name, description="oraculum: active learning on spectra", callable=False)
    try:
        client.connect(hub=hub)
    except (SAMPHubError, SAMPClientError, OSError) as error:
        raise SampError(f"no SAMP hub can be reached ({error}): start {TOOLS.get(mtype, 'TOPCAT')}, which runs one") from None
    try:
        names = {}
        for client_id in client.get_subscribed_clients(mtype):
            metadata = client.get_metadata(client_id) or {}
            names[client_id] = str(metadata.get("samp.name") or client_id)
        chosen = {cid: n for cid, n in names.items() if to is None or to.lower() in n.lower()}
        if not chosen:
            listening = f" (listening: {', '.join(sorted(names.values()))})" if names else ""
            wanted = f"called like {to!r} " if to else ""
            raise SampError(f"no application {wanted}connected to the SAMP hub accepts {mtype}{listening}: start "
                            f"{TOOLS.get(mtype, 'one')} and let it connect to the hub")
        for client_id in chosen:
            client.notify(client_id, message)
        return sorted(chosen.values())
    except (SAMPHubError, SAMPProxyError) as error:
        raise SampError(f"the SAMP hub refused the message: {error}") from None
    finally:
        client.disconnect()


def send_spectrum(api: Client, dataset: str, index: int, *, raw: bool = False,
                  format: Literal["fits", "votable"] = "fits", to: str | None = None, hub: Any = None) -> list[str]:
    """Show one spectrum of ``dataset`` in SPLAT (or another spectrum viewer); returns who got it."""
    return send(spectrum_message(api, dataset, index, raw=raw, format=format), to=to, hub=hub)


def send_candidates(api: Client, experiment: str, iteration: int | None = None, *, to: str | None = None,
                    hub: Any = None) -> list[str]:
    """Load an iteration's candidate catalogue into TOPCAT (or another table tool); returns who got it."""
    return send(candidates_message(api, experiment, iteration), to=to, hub=hub)
