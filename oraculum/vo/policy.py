"""The outbound fetch policy: where a server-side fetch may go, and how much it may bring back.

Every request oraculum makes on behalf of a source (a VOTable or URL list at an ``http(s)://``
location, the pages of an HTTP index, DataLink calls and documents, SODA cutouts, the spectra
themselves, and every redirect on the way) goes through :class:`~oraculum.vo.transport.HttpClient`,
which applies this policy:

* only ``http`` and ``https`` URLs;
* the host's addresses are resolved and checked before a connection is opened, and the
  connection goes to the address that was checked (so a DNS answer that changes between the
  check and the connect, "DNS rebinding", cannot aim it elsewhere). Redirects are followed by
  the client itself, at most :data:`MAX_REDIRECTS` of them, and every hop is checked again;
* an address is admitted when it is public (:attr:`ipaddress.IPv4Address.is_global`) and not
  multicast, or when the admin allow-list (``ORACULUM_FETCH_ALLOW``) names it. Refused by
  default: private networks (RFC 1918, unique-local ``fc00::/7``), loopback, link-local
  (``169.254.0.0/16`` with the cloud metadata address, ``fe80::/10``), carrier-grade NAT,
  multicast, unspecified, documentation, benchmarking and reserved ranges, and public-looking
  IPv6 forms that embed a refused IPv4 address (IPv4-mapped, NAT64, 6to4). A host name whose
  DNS answer contains any refused address is refused as a whole;
* a file may be at most ``ORACULUM_FETCH_MAX_BYTES`` long, counted while it streams (after any
  content decoding), so a runaway answer is cut off rather than stored.

The allow-list is for archives the admin runs on a private network (an in-cluster DaCHS, a
MinIO bucket served over HTTP): comma- or space-separated entries, each an address or CIDR
range (``10.20.0.0/16``, ``127.0.0.1/32``, ``fd12::/64``) or a host name (``archive.internal``;
``*.svc.cluster.local`` for every name below it). A listed name admits whatever it resolves to.

Refusals are :class:`PolicyViolation`; their reasons name the URL's own host and what kind of
address was refused, never an address a host name resolved to (that would map an internal DNS
for whoever reads the report) and never bytes of an answer.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from oraculum.settings import Settings

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
#: (address family, socket address) pairs, as ``socket.getaddrinfo`` gives them.
Resolved = list[tuple[int, str]]

SCHEMES = frozenset({"http", "https"})
#: Redirects followed for one request at most.
MAX_REDIRECTS = 10
#: Largest file (bytes) when the settings name none.
DEFAULT_MAX_BYTES = 512 * 1024**2
#: The setting that names the allow-list, as its environment variable (for messages).
ALLOW_SETTING = "ORACULUM_FETCH_ALLOW"

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_SIX_TO_FOUR = ipaddress.ip_network("2002::/16")
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
_UNIQUE_LOCAL = ipaddress.ip_network("fc00::/7")
_PRIVATE = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))  # RFC 1918
#: Refused kinds of address, checked in this order, with how a reason names them.
_CLASSES = (("is_unspecified", "an unspecified address"), ("is_loopback", "a loopback address"),
            ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"))


class PolicyViolation(Exception):
    """A request the outbound fetch policy refuses; ``reason`` says why (no fetched bytes)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def resolve(host: str, port: int) -> Resolved:
    """The host's addresses from the system resolver (tests replace this function)."""
    answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [(family, str(sockaddr[0])) for family, _, _, _, sockaddr in answers]


def address_class(ip: IPAddress) -> str | None:
    """None for an address a fetch may reach by default; else what it is, e.g. "a loopback
    address" (for the reason)."""
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return address_class(ip.ipv4_mapped)
        for network, offset in ((_NAT64, 0), (_SIX_TO_FOUR, 80)):
            if ip in network:  # a public-looking prefix that reaches an embedded IPv4 address
                return address_class(ipaddress.IPv4Address((int(ip) >> offset) & 0xFFFFFFFF))
        if ip in _NAT64_LOCAL:
            return "a local-use NAT64 address"
        if ip in _IPV4_COMPATIBLE and not (ip.is_unspecified or ip.is_loopback):
            return "an IPv4-compatible (deprecated) address"
        if ip.is_site_local:
            return "a site-local address"
    for name, phrase in _CLASSES:
        if getattr(ip, name):
            return phrase
    if any(ip in network for network in _PRIVATE):
        return "a private address"
    if ip in _UNIQUE_LOCAL:
        return "a unique-local address"
    if not ip.is_global:  # carrier-grade NAT, documentation, benchmarking, reserved, ...
        return "a reserved address (not globally routed)"
    return None


def _ip(text: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(text.split("%", 1)[0])  # a scoped IPv6 address: the address itself
    except ValueError:
        return None


@dataclass(frozen=True)
class AllowList:
    """The admin's exceptions: networks, exact host names, and ``*.suffix`` wildcards."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()

    @classmethod
    def parse(cls, entries: str | Iterable[str]) -> "AllowList":
        """From a comma- or space-separated string (or a list); ValueError naming a bad entry."""
        items = entries.replace(",", " ").split() if isinstance(entries, str) else [e.strip() for e in entries]
        networks: list[IPNetwork] = []
        hosts: set[str] = set()
        suffixes: list[str] = []
        for entry in filter(None, items):
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            label = name.removeprefix("*.")
            if not label or any(not part or not all(c.isalnum() or c == "-" for c in part) for part in label.split(".")):
                raise ValueError(f"{ALLOW_SETTING}: {entry!r} is neither an address, a CIDR range "
                                 "(10.0.0.0/8) nor a host name (archive.internal, *.svc.cluster.local)")
            if name.startswith("*."):
                suffixes.append("." + label)
            else:
                hosts.add(name)
        return cls(tuple(networks), frozenset(hosts), tuple(suffixes))

    def names(self, host: str) -> bool:
        host = host.lower().rstrip(".")
        return host in self.hosts or any(host.endswith(suffix) for suffix in self.suffixes)

    def admits(self, ip: IPAddress) -> bool:
        mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
        return any(ip in network or (mapped is not None and mapped in network) for network in self.networks)


@dataclass(frozen=True)
class OutboundPolicy:
    """What every server-side fetch obeys (see the module docstring)."""

    allow: AllowList = field(default_factory=AllowList)
    max_bytes: int = DEFAULT_MAX_BYTES
    max_redirects: int = MAX_REDIRECTS
    #: ``(host, port) -> [(family, address)]``; None: :func:`resolve` (looked up at call time)
    resolver: Callable[[str, int], Resolved] | None = None

    @classmethod
    def from_settings(cls, settings: "Settings | None" = None) -> "OutboundPolicy":
        """The policy of ``settings`` (the environment's when None)."""
        if settings is None:
            from oraculum.settings import get_settings

            settings = get_settings()
        return cls(AllowList.parse(settings.fetch_allow), settings.fetch_max_bytes)

    def check_url(self, url: str) -> None:
        """Refuse a URL by its form alone: the scheme, a missing host, a refused literal address."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError:
            raise PolicyViolation("not a valid URL") from None
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES:
            raise PolicyViolation("only http and https URLs are fetched, not "
                                  + (f"{scheme}:" if scheme else "a URL without a scheme"))
        if not host:
            raise PolicyViolation("the URL names no host")
        ip = _ip(host)
        if ip is not None:
            self._check_address(host, ip, literal=True)

    def addresses(self, host: str, port: int) -> Resolved:
        """The checked addresses to connect to for ``host``: its DNS answer (or the literal
        address), every entry admitted; :class:`PolicyViolation` otherwise."""
        ip = _ip(host)
        if ip is not None:
            self._check_address(host, ip, literal=True)
            return [(socket.AF_INET6 if ip.version == 6 else socket.AF_INET, str(ip))]
        try:
            answers = (self.resolver or resolve)(host, port)
        except (OSError, UnicodeError):
            raise PolicyViolation(f"the host {host} could not be resolved") from None
        if not answers:
            raise PolicyViolation(f"the host {host} has no address")
        named = self.allow.names(host)
        for _, text in answers:
            address = _ip(text)
            if address is None:
                raise PolicyViolation(f"the host {host} resolves to something that is not an IP address")
            if not named:
                self._check_address(host, address, literal=False)
        return answers

    def _check_address(self, host: str, ip: IPAddress, *, literal: bool) -> None:
        kind = address_class(ip)
        if kind is None or self.allow.admits(ip):
            return
        where = f"{host} is {kind}" if literal else f"{host} resolves to {kind}"
        raise PolicyViolation(f"refused: {where}; the fetchers reach public addresses only, "
                              f"unless the admin allow-list {ALLOW_SETTING} names it")
