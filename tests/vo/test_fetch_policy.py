"""The outbound fetch policy (oraculum/vo/policy.py): where a server-side fetch may go.

Every refusal is shown on the real client (:class:`~oraculum.vo.transport.HttpClient`) and, where
it matters, against a real HTTP server on 127.0.0.1 (:class:`tests.support.vo_archive.Archive`)
with real redirects. The system's connect is watched (``connections``), so "refused" means no
socket was ever opened to the address, not merely that the answer was thrown away. Host names
that must resolve to a chosen address use ``.invalid`` names (RFC 2606: never in the real DNS)
and a patched resolver.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpcore
import pytest

import oraculum.vo.policy as policy_module
from oraculum.settings import Settings
from oraculum.spectra.readers import read_spectrum
from oraculum.spectra.spectrum import RejectReason, SpectrumRejected
from oraculum.vo.policy import AllowList, OutboundPolicy, PolicyViolation, address_class
from oraculum.vo.sources import fetch_source, recognise, screen_fetched
from oraculum.vo.spec import VOSourceError, parse_vo_spec
from oraculum.vo.transport import FetchError, HttpClient, RetryPolicy
from tests.support.vo_archive import LOOPBACK_ALLOW, Archive, datalink_answer, datalink_votable

SECRET = b"SECRET-7f3a-instance-credentials"
FAST = "#retries=1&concurrency=2"


@pytest.fixture()
def archive(tmp_path: Path) -> Iterator[Archive]:
    root = tmp_path / "archive"
    root.mkdir()
    (root / "spectrum.fits").write_bytes(b"SIMPLE  =                    T" + b" " * 2850)
    with Archive(root) as server:
        yield server


@pytest.fixture()
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every address a socket is opened to (by any httpx/httpcore client in the test)."""
    opened: list[str] = []
    connect = httpcore.SyncBackend.connect_tcp

    def watched(self: httpcore.SyncBackend, host: str, port: int, *args: object, **kwargs: object) -> object:
        opened.append(host)
        return connect(self, host, port, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", watched)
    return opened


def fixed_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[str]]) -> list[str]:
    """Resolve the given names to the given addresses (the policy's resolver and the system's);
    returns the names looked up, in order."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[tuple[int, str]]:
        asked.append(host)
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "not known")
        return [(socket.AF_INET6 if ":" in a else socket.AF_INET, a) for a in answers[host]]

    def system(host: str, *args: object, **kwargs: object) -> object:
        raise AssertionError(f"the system resolver was asked for {host}: someone resolved again after the check")

    monkeypatch.setattr(policy_module, "resolve", resolve)
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *a, **k: (
        system(host) if str(host).endswith(".invalid") else real_getaddrinfo(host, *a, **k)))
    return asked


real_getaddrinfo = socket.getaddrinfo


def client(allow: str = "", **policy: object) -> HttpClient:
    return HttpClient(RetryPolicy(retries=2, backoff=0.01), outbound=OutboundPolicy(AllowList.parse(allow), **policy))


def refused(call: object, status: int | None = None) -> FetchError:
    """The FetchError of ``call()``: final at once (never retried), ``status`` the answer's (None:
    no answer, nothing was asked)."""
    with pytest.raises(FetchError) as failure:
        call()  # type: ignore[operator]
    assert failure.value.attempts == 1 and failure.value.status == status
    return failure.value


# --- each refused class of address ----------------------------------------------------------------


@pytest.mark.parametrize(("url", "kind"), [
    ("http://10.0.0.1/spectrum.fits", "a private address"),
    ("http://172.16.5.4/", "a private address"),
    ("http://192.168.1.1/", "a private address"),
    ("http://169.254.169.254/latest/meta-data/iam/security-credentials/", "a link-local address"),
    ("http://[::1]/", "a loopback address"),
    ("http://[fd00::1]/", "a unique-local address"),
    ("http://[fe80::1]/", "a link-local address"),
    ("http://[::ffff:169.254.169.254]/", "a link-local address"),  # IPv4-mapped IPv6
    ("http://[64:ff9b::a9fe:a9fe]/", "a link-local address"),  # NAT64 of the metadata address
    ("http://0.0.0.0/", "an unspecified address"),
    ("http://224.0.0.1/", "a multicast address"),
    ("http://100.64.0.1/", "a reserved address"),  # carrier-grade NAT
    ("https://127.0.0.1/", "a loopback address"),
    ("http://2130706433/", "a loopback address"),  # 127.0.0.1 as one number: resolved, then checked
])
def test_every_class_of_internal_address_is_refused_before_connecting(url: str, kind: str,
                                                                     connections: list[str]) -> None:
    with client() as http:
        error = refused(lambda: http.get_bytes(url))
    assert kind in error.reason and "ORACULUM_FETCH_ALLOW" in error.reason
    assert connections == []


def test_a_live_loopback_server_is_not_reached_without_the_allow_list(archive: Archive,
                                                                      connections: list[str]) -> None:
    with client() as http:
        error = refused(lambda: http.download(archive.url("spectrum.fits")))
    assert "127.0.0.1 is a loopback address" in error.reason
    assert archive.requests == [] and connections == []


def test_a_host_name_that_resolves_to_a_private_address_is_refused(monkeypatch: pytest.MonkeyPatch,
                                                                   connections: list[str]) -> None:
    fixed_resolver(monkeypatch, {"evil.invalid": ["10.0.0.7"], "mixed.invalid": ["93.184.215.14", "fd00::7"]})
    with client() as http:
        error = refused(lambda: http.get_bytes("http://evil.invalid/"))
        assert "evil.invalid resolves to a private address" in error.reason
        assert "10.0.0.7" not in error.reason  # an internal DNS answer is not mapped out in reports
        mixed = refused(lambda: http.get_bytes("http://mixed.invalid/"))  # any refused answer refuses all
        assert "unique-local" in mixed.reason
        unknown = refused(lambda: http.get_bytes("http://nowhere.invalid/"))
        assert "could not be resolved" in unknown.reason
    assert connections == []


def test_the_connection_goes_to_the_address_that_was_checked(archive: Archive, monkeypatch: pytest.MonkeyPatch,
                                                              connections: list[str]) -> None:
    """DNS rebinding: the name is resolved once, by the policy, and that address is connected to;
    nothing resolves it again (the system resolver fails the test if asked)."""
    asked = fixed_resolver(monkeypatch, {"archive.invalid": ["127.0.0.1"]})
    port = archive.server.server_address[1]
    with client(LOOPBACK_ALLOW) as http:
        assert http.get_bytes(f"http://archive.invalid:{port}/spectrum.fits").startswith(b"SIMPLE")
    assert asked == ["archive.invalid"] and connections == ["127.0.0.1"]


# --- redirects ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("target", "kind"), [
    ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
    ("http://127.0.0.2:{port}/spectrum.fits", "127.0.0.2 is a loopback address"),  # not in 127.0.0.1/32
    ("http://[::1]:{port}/", "::1 is a loopback address"),
    ("http://10.1.2.3/", "10.1.2.3 is a private address"),
])
def test_a_redirect_from_an_allowed_server_to_a_refused_address_is_refused(
        archive: Archive, target: str, kind: str, connections: list[str]) -> None:
    port = archive.server.server_address[1]
    hop = archive.redirect("go", target.format(port=port))
    chain = archive.redirect("first", hop, status=301)  # checked at every hop, not just the first
    with client(LOOPBACK_ALLOW) as http:
        for start in (hop, chain):
            error = refused(lambda: http.download(start))
            assert kind in error.reason and error.url == start
    assert set(connections) == {"127.0.0.1"}  # only the allowed server was ever connected to
    assert archive.count("go") == 2 and archive.count("first") == 1


def test_a_fetch_whose_redirect_leads_to_metadata_fails_that_row_only(archive: Archive, tmp_path: Path,
                                                                      connections: list[str]) -> None:
    """The whole path: a URL list through `fetch_source`, the allow-list from the settings."""
    trap = archive.redirect("trap.fits", "http://169.254.169.254/latest/meta-data/")
    listing = tmp_path / "list.txt"
    listing.write_text(f"{archive.url('spectrum.fits')}\n{trap}\n")
    settings = Settings(store=str(tmp_path / "store"), fetch_allow=LOOPBACK_ALLOW)
    report = fetch_source(parse_vo_spec(f"urls:{listing}{FAST}"), settings)  # type: ignore[arg-type]
    by_key = {r.key: r for r in report.records}
    assert by_key["spectrum.fits"].status == "fetched"
    assert by_key["trap.fits"].status == "failed" and "link-local" in (by_key["trap.fits"].reason or "")
    assert "169.254.169.254" not in connections
    refused_everywhere = Settings(store=str(tmp_path / "store2"), fetch_allow="")  # the list's own server too
    again = fetch_source(parse_vo_spec(f"urls:{listing}{FAST}"), refused_everywhere)  # type: ignore[arg-type]
    assert again.count("failed") == 2 and all("loopback" in (r.reason or "") for r in again.records)


def test_allowed_redirects_are_followed_and_loops_are_cut(archive: Archive) -> None:
    archive.redirect("moved.fits", "/spectrum.fits", status=308)
    archive.redirect("loop-a", "/loop-b")
    archive.redirect("loop-b", "/loop-a")
    with client(LOOPBACK_ALLOW, max_redirects=3) as http:
        download = http.download(archive.url("moved.fits"))
        try:
            assert download.path.read_bytes().startswith(b"SIMPLE") and download.url == archive.url("moved.fits")
        finally:
            download.path.unlink()
        error = refused(lambda: http.get_bytes(archive.url("loop-a")))
    assert "more than 3 redirects" in error.reason and archive.count("loop-a") + archive.count("loop-b") == 4


# --- schemes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://ftp.example.org/spectra/a.fits",
                                 "gopher://127.0.0.1:6379/_INFO", "dict://127.0.0.1:11211/stats"])
def test_only_http_and_https_are_fetched(url: str, connections: list[str]) -> None:
    with client("0.0.0.0/0, ::/0") as http:  # even with everything allowed
        error = refused(lambda: http.get_bytes(url))
    assert "only http and https" in error.reason and connections == []


def test_a_redirect_to_another_scheme_is_refused(archive: Archive) -> None:
    archive.redirect("to-file", "file:///etc/passwd")
    with client(LOOPBACK_ALLOW) as http:
        error = refused(lambda: http.get_bytes(archive.url("to-file")))
    assert "only http and https URLs are fetched, not file:" in error.reason


# --- the size cap, and no fetched bytes in any message ---------------------------------------------------


@pytest.mark.parametrize("length", [True, False])
def test_a_file_over_the_size_cap_is_refused_without_quoting_it(archive: Archive, length: bool,
                                                                tmp_path: Path) -> None:
    url = archive.serve("big.fits", SECRET * 400, headers={"Content-Type": "application/fits"}, length=length)
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    with client(LOOPBACK_ALLOW, max_bytes=4096) as http:
        error = refused(lambda: http.download(url, directory=str(downloads)), status=200)
        assert len(http.get_bytes(archive.url("spectrum.fits"))) == 2880  # under the cap: fine
    assert "larger than 4096 bytes" in error.reason and "ORACULUM_FETCH_MAX_BYTES" in error.reason
    assert b"SECRET" not in str(error).encode() and list(downloads.iterdir()) == []  # nothing left behind


def test_the_size_cap_comes_from_the_settings(archive: Archive, tmp_path: Path) -> None:
    url = archive.serve("big.fits", SECRET * 400, length=False)
    listing = tmp_path / "list.txt"
    listing.write_text(url + "\n")
    settings = Settings(store=str(tmp_path / "store"), fetch_allow=LOOPBACK_ALLOW, fetch_max_bytes=4096)
    (record,) = fetch_source(parse_vo_spec(f"urls:{listing}{FAST}"), settings).records  # type: ignore[arg-type]
    assert record.status == "failed" and "larger than 4096 bytes" in (record.reason or "")
    assert "SECRET" not in (record.reason or "")


def test_a_hostile_answer_is_never_quoted(archive: Archive, tmp_path: Path) -> None:
    """The server's reason phrase, a non-VOTable DataLink answer (40 bytes of it used to be
    quoted), a DataLink error message and a document that is nothing known: none is repeated."""
    gone = archive.serve("gone.fits", SECRET, 404, phrase=SECRET.decode())
    dl_text = archive.serve("dl-text", SECRET + b"\n" * 10, headers={"Content-Type": "text/plain"})
    dl_fault = archive.serve("dl-fault", datalink_answer(["a", "b"], {}, None).replace(
        b"NotFoundFault: a", b"NotFoundFault: " + SECRET).replace(b"NotFoundFault: b", SECRET))
    archive.serve("what.txt", SECRET + b" is neither a VOTable nor a list\n")
    store = tmp_path / "store"
    settings = Settings(store=str(store), fetch_allow=LOOPBACK_ALLOW)
    reasons: list[str] = []
    listing = tmp_path / "list.txt"
    listing.write_text(gone + "\n")
    reasons += [r.reason or "" for r in fetch_source(parse_vo_spec(f"urls:{listing}{FAST}"), settings).records]  # type: ignore[arg-type]
    for service in (dl_text, dl_fault):
        table = tmp_path / f"{service.rsplit('/', 1)[1]}.xml"
        table.write_bytes(datalink_votable(["a", "b"], service))
        records = fetch_source(parse_vo_spec(f"votable:{table}#datalink=this&retries=1"), settings).records  # type: ignore[arg-type]
        assert {r.status for r in records} == {"failed"}
        reasons += [r.reason or "" for r in records]
    with pytest.raises(VOSourceError) as unknown:
        recognise(archive.url("what.txt"), settings)
    reasons.append(str(unknown.value))
    assert reasons[0] == "HTTP 404 Not Found"
    assert any("not XML" in r for r in reasons) and any(r.endswith("NotFoundFault") for r in reasons)
    assert all("SECRET" not in r for r in reasons), reasons
    for path in store.rglob("report-*.jsonl"):  # the reports viewers may read
        assert SECRET not in path.read_bytes()


def test_a_fetched_non_fits_answer_is_rejected_without_its_first_line() -> None:
    """The readers quote the first line of a text file that is not a spectrum table; a fetched
    file's rejection (what ends up in rejected.jsonl) keeps the reason and drops the quote."""
    answer = b"AccessKeyId,SecretAccessKey\n" + SECRET + b",x\n"
    with pytest.raises(SpectrumRejected) as direct:
        read_spectrum(answer, "creds.fits")
    assert "AccessKeyId" in direct.value.message  # what a local file's rejection says, and did for fetched ones
    for data in (answer, b"\x00\x01" + SECRET, b""):
        with pytest.raises(SpectrumRejected) as screened:
            screen_fetched(data, "creds.fits")
        assert "AccessKeyId" not in screened.value.message and "SECRET" not in screened.value.message
        assert screened.value.message.startswith("creds.fits: the fetched file")
    assert screened.value.reason == RejectReason.TRUNCATED  # the reader's reason is kept
    screen_fetched(b"SIMPLE  =                    T", "ok.fits")  # FITS: left to the readers, not read twice
    screen_fetched(b"wavelength,flux\n6500,1\n6510,2\n", "ok.csv")  # a readable table passes


def test_a_fetched_non_fits_answer_is_rejected_without_its_first_line_in_the_dataset(
        archive: Archive, tmp_path: Path, shared_data: Path) -> None:
    from click.testing import CliRunner

    from oraculum.cli.main import main
    from oraculum.spectra.datasets import Dataset
    from oraculum.store import LocalStore

    good = next((shared_data / "lamost-dr2").rglob("*.fits"))
    good_url = archive.serve("good.fits", good.read_bytes())
    bad_url = archive.serve("meta.fits", b"ami-id\n" + SECRET + b"\n")  # what a metadata service answers
    listing = tmp_path / "list.txt"
    listing.write_text(f"{good_url}\n{bad_url}\n")
    store = tmp_path / "store"
    result = CliRunner().invoke(main, ["--store", str(store), "preprocess", f"urls:{listing}", "--dataset", "d",
                                       "--workers", "1"])
    assert result.exit_code == 0, result.output
    (line,) = Dataset.open(LocalStore(store), "d").rejected()
    assert line["key"] == "meta.fits" and line["reason"] == "not-fits"
    assert "SECRET" not in line["message"] and "ami-id" not in line["message"]


# --- the allow-list ------------------------------------------------------------------------------------


def test_the_allow_list_admits_the_ranges_and_names_it_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    fixed_resolver(monkeypatch, {"dachs.archive.svc.cluster.local": ["10.96.0.12"], "other.invalid": ["10.96.0.12"],
                                 "archive.internal": ["192.168.7.7"]})
    policy = OutboundPolicy(AllowList.parse("10.20.0.0/16, fd12:3456::/32 archive.internal,*.svc.cluster.local"))
    for host in ("10.20.3.4", "fd12:3456::9", "dachs.archive.svc.cluster.local", "archive.internal", "93.184.215.14"):
        policy.addresses(host, 80)  # admitted: no exception
    for host in ("10.21.0.1", "fd12:3457::1", "other.invalid", "169.254.169.254", "127.0.0.1"):
        with pytest.raises(PolicyViolation):
            policy.addresses(host, 80)
    with pytest.raises(ValueError, match="'ftp://archive'"):
        AllowList.parse("10.0.0.0/8, ftp://archive")


def test_the_allow_list_admits_a_range_for_a_real_fetch(archive: Archive, monkeypatch: pytest.MonkeyPatch,
                                                        connections: list[str]) -> None:
    monkeypatch.setenv("ORACULUM_FETCH_ALLOW", "127.0.0.0/8")  # the settings' way, read by the client
    with HttpClient(RetryPolicy(retries=0)) as http:
        assert http.get_bytes(archive.url("spectrum.fits")).startswith(b"SIMPLE")
    monkeypatch.setenv("ORACULUM_FETCH_ALLOW", "10.0.0.0/8")
    with HttpClient(RetryPolicy(retries=0)) as http:
        assert "loopback" in refused(lambda: http.get_bytes(archive.url("spectrum.fits"))).reason
    assert connections == ["127.0.0.1"]


@pytest.mark.parametrize(("address", "kind"), [
    ("8.8.8.8", None), ("2001:4860:4860::8888", None), ("::ffff:8.8.8.8", None),
    ("10.0.0.1", "private"), ("172.31.255.255", "private"), ("192.168.0.1", "private"),
    ("127.0.0.1", "loopback"), ("169.254.169.254", "link-local"), ("fd00:ec2::254", "unique-local"),
    ("fe80::1", "link-local"), ("ff02::1", "multicast"), ("239.255.255.250", "multicast"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"), ("192.0.2.1", "reserved"), ("240.0.0.1", "reserved"),
    ("2002:0a00:0001::1", "private"), ("fec0::1", "site-local"), ("::a00:1", "IPv4-compatible"),
])
def test_the_address_classes(address: str, kind: str | None) -> None:
    import ipaddress

    found = address_class(ipaddress.ip_address(address))
    assert (found is None) if kind is None else (found is not None and kind in found)
