"""Signed links for SAMP tools (api/routers/share.py, api/links.py): what a viewer gets from
``GET .../share``, what the link serves without a token (compared with the token-protected routes
of the same spectrum and table), and the refusals: a changed link is 403, an expired one 410.

The real application on a copy of the synthetic world (tests/support/api_world.py), in process."""

from __future__ import annotations

import io
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse
from fastapi.testclient import TestClient

from tests.support.api_fixtures import auth, settings_for
from oraculum.api.app import create_app
from oraculum.api.links import LinkRefused, LinkSigner

SECRET = "share-test-secret-0123456789abcdef-0123456789"
V1 = "/api/v1"


@pytest.fixture(scope="module")
def client(world: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:  # noqa: F811
    store = tmp_path_factory.mktemp("share") / "store"
    shutil.copytree(world, store)
    app = create_app(settings_for(store, api_share_secret=SECRET, api_share_seconds=600))
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


def share(client: TestClient, path: str, **params: str | int) -> dict:
    response = client.get(f"{V1}{path}", params=params, headers=auth("viewer"))
    assert response.status_code == 200, response.text
    return response.json()


def floats(values: list[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


def votable_columns(data: bytes) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # astropy notes that VOUnit prefers 0.1nm to Angstrom
        table = parse(io.BytesIO(data)).get_first_table()
        units = {f.name: str(f.unit) for f in table.fields}
    params = {p.name: str(p.value) for p in table.params}
    assert units["WAVELENGTH"] == "Angstrom"
    return (np.asarray(table.array["WAVELENGTH"].filled(np.nan), dtype=np.float64),
            np.asarray(table.array["FLUX"].filled(np.nan), dtype=np.float64), params)


def test_a_preprocessed_spectrum_as_fits_is_the_api_spectrum(client: TestClient) -> None:
    answer = share(client, "/datasets/pool/spectra/3/share")
    assert answer["mtype"] == "spectrum.load.ssa-generic"
    params, url = answer["params"], answer["url"]
    assert params["url"] == url == params["meta"]["Access.Reference"] and url.endswith(answer["path"])
    assert answer["path"].startswith("shared/spectra/pool/3/preprocessed.fits?")
    assert 590 <= answer["expires"] - time.time() <= 601  # ORACULUM_API_SHARE_SECONDS
    meta = params["meta"]
    assert meta["Access.Format"] == "application/fits" and meta["Dataset.SpectralAxis"] == "WAVELENGTH"
    assert meta["Dataset.FluxAxis"] == "FLUX" and meta["Target.Name"].startswith("LAMOST J")
    assert all(isinstance(v, str) for v in meta.values()) and params["spectrum-id"] == "oraculum:pool/3/preprocessed"

    fetched = client.get(url)  # no token: the signature is the permission
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "application/fits"
    expected = client.get(f"{V1}/datasets/pool/spectra/3/flux", headers=auth("viewer")).json()
    with fits.open(io.BytesIO(fetched.content)) as hdus:
        table = hdus["SPECTRUM"]
        assert table.header["TUNIT1"] == "Angstrom" and table.header["TUCD1"] == "em.wl"
        assert table.header["AIRORVAC"] == {"air": "air", "vacuum": "vac"}[expected["medium"]]
        assert meta["oraculum:medium"] == expected["medium"]
        np.testing.assert_array_equal(table.data["WAVELENGTH"], np.asarray(expected["wavelength"]))
        np.testing.assert_array_equal(table.data["FLUX"], floats(expected["flux"]))
        info = client.get(f"{V1}/datasets/pool/spectra/3", headers=auth("viewer")).json()
        assert hdus[0].header["RA"] == pytest.approx(info["meta"]["ra"]) and hdus[0].header["INDEX"] == 3


def test_a_raw_spectrum_as_votable_is_the_archive_spectrum(client: TestClient) -> None:
    answer = share(client, "/datasets/pool/spectra/5/share", variant="raw", format="votable")
    assert answer["params"]["meta"]["Access.Format"] == "application/x-votable+xml"
    fetched = client.get(f"{V1}/{answer['path']}")
    assert fetched.status_code == 200 and fetched.headers["content-type"] == "application/x-votable+xml"
    wavelength, flux, params = votable_columns(fetched.content)
    expected = client.get(f"{V1}/datasets/pool/spectra/5/raw", headers=auth("viewer")).json()
    assert wavelength.size == expected["points"] > 1000
    np.testing.assert_array_equal(wavelength, floats(expected["wavelength"]))
    np.testing.assert_array_equal(flux, floats(expected["flux"]))
    assert params["medium"] == expected["medium"] and params["identifier"] == "oraculum:pool/5/raw"


def test_the_candidate_table_link_serves_the_candidates_votable(client: TestClient) -> None:
    answer = share(client, "/experiments/exp/iterations/1/candidates/share", seconds=60)
    assert answer["mtype"] == "table.load.votable" and answer["params"]["table-id"] == "oraculum:exp/1/candidates"
    assert set(answer["params"]) == {"url", "table-id", "name"}
    fetched = client.get(answer["url"])
    assert fetched.status_code == 200
    assert fetched.content == client.get(f"{V1}/experiments/exp/iterations/1/candidates.vot", headers=auth("viewer")).content
    table = parse(io.BytesIO(fetched.content)).get_first_table()  # the world's iteration 1 may have no rows
    assert {"index", "id", "ra", "dec", "probability"} <= {f.name for f in table.fields}


def _tampered(url: str) -> list[str]:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    signature, expires = query["signature"], query["expires"]
    other = ("A" if signature[0] != "A" else "B") + signature[1:]
    return [
        f"{parts.path}?expires={expires}&signature={other}",                         # a changed signature
        f"{parts.path}?expires={int(expires) + 3600}&signature={signature}",         # a longer life
        f"{parts.path.replace('/3/', '/4/')}?{parts.query}",                         # another spectrum
        f"{parts.path.replace('.fits', '.vot')}?{parts.query}",                      # another format
        f"{parts.path.replace('preprocessed', 'raw')}?{parts.query}",                # another variant
        f"{parts.path}?expires={expires}",                                           # no signature
        f"{parts.path}?expires=soon&signature={signature}",                          # not a time
        parts.path,
    ]


def test_a_changed_link_is_refused_with_403(client: TestClient) -> None:
    url = share(client, "/datasets/pool/spectra/3/share")["url"]
    for changed in _tampered(url):
        response = client.get(changed, headers=auth("admin"))  # a token does not help either
        assert response.status_code == 403, (changed, response.text)
        assert "signature" in response.json()["detail"] or "signed link" in response.json()["detail"]
    table = urlsplit(share(client, "/experiments/exp/iterations/1/candidates/share")["url"])
    moved = client.get(f"{table.path.replace('/iterations/1/', '/iterations/0/')}?{table.query}")
    assert moved.status_code == 403


def test_an_expired_link_is_410_and_a_link_of_another_key_403(client: TestClient) -> None:
    signer = LinkSigner(SECRET.encode())
    scope = "/shared/spectra/pool/3/preprocessed.fits"
    query, expires = signer.sign(scope, 60, now=time.time() - 120)
    response = client.get(f"{V1}{scope}?{query}")
    assert response.status_code == 410 and "expired" in response.json()["detail"]
    fresh, _ = signer.sign(scope, 60)
    assert client.get(f"{V1}{scope}?{fresh}").status_code == 200
    stranger, _ = LinkSigner(b"x" * 32).sign(scope, 60)
    assert client.get(f"{V1}{scope}?{stranger}").status_code == 403


def test_share_answers_4xx_for_what_cannot_be_shared(client: TestClient) -> None:
    cases = {
        f"{V1}/datasets/pool/spectra/999999/share": 404,
        f"{V1}/datasets/nothing/spectra/1/share": 404,
        f"{V1}/datasets/pool/spectra/3/share?format=png": 422,
        f"{V1}/datasets/pool/spectra/3/share?variant=smoothed": 422,
        f"{V1}/datasets/pool/spectra/3/share?seconds=5": 422,
        f"{V1}/datasets/pool/spectra/3/share?seconds=99999999": 422,
        f"{V1}/experiments/exp/iterations/0/candidates/share": 404,  # a cold start has no candidates
        f"{V1}/experiments/ghost/iterations/1/candidates/share": 404,
    }
    for path, status in cases.items():
        response = client.get(path, headers=auth("viewer"))
        assert response.status_code == status, (path, response.text)


def test_the_signer_alone() -> None:
    signer = LinkSigner(b"k" * 32, default_seconds=30)
    query, expires = signer.sign("/a", now=1000)
    fields = {k: v[0] for k, v in parse_qs(query).items()}
    assert expires == 1030 and fields["expires"] == "1030"
    signer.verify("/a", fields["expires"], fields["signature"], now=1030)
    with pytest.raises(LinkRefused) as gone:
        signer.verify("/a", fields["expires"], fields["signature"], now=1031)
    assert gone.value.status == 410
    with pytest.raises(LinkRefused) as wrong:
        signer.verify("/b", fields["expires"], fields["signature"], now=1000)
    assert wrong.value.status == 403
    with pytest.raises(ValueError, match="at least 32 bytes"):
        LinkSigner(b"short")
    with pytest.raises(ValueError, match="seconds"):
        signer.sign("/a", 0)
