"""Which endpoint URLs the service may call: no request forgery against its own network.

In production an endpoint must be `https` and every address its host resolves to must be
a global unicast address: not loopback, private, link-local (169.254/16, where the cloud
metadata server answers, and fe80::/10), unique-local (fd00:ec2::254 is AWS's metadata
server), unspecified, multicast, reserved, shared CGNAT space (100.64/10), nor one of
these in an IPv4-mapped, 6to4 or NAT64 form. The check runs when an endpoint is created
or changed, and again at every send: DNS can change after the check, so the sender
connects to the very address it checked (`resolve`), never resolving twice.

Development (`config.production` false) allows `http` and every address, so a receiver
on 127.0.0.1 works.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.errors import ValidationFailed

MAX_URL_LENGTH = 2000
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrl(ValidationFailed):
    """An endpoint URL the service refuses to call."""

    code = "unsafe_url"


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (`address`) and what to call it (`host`)."""

    scheme: str
    host: str
    port: int
    path: str
    address: str


def _embedded_ipv4(address: Address) -> ipaddress.IPv4Address | None:
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public_address(address: Address | str) -> bool:
    """Whether `address` is a global unicast address the service may connect to."""
    if isinstance(address, str):
        address = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return is_public_address(address.ipv4_mapped)  # the very IPv4 address
    inner = _embedded_ipv4(address)
    if inner is not None and not is_public_address(inner):
        return False
    if address in _METADATA or (isinstance(address, ipaddress.IPv4Address) and address in _CGNAT):
        return False
    return bool(
        address.is_global
        and not (
            address.is_loopback
            or address.is_private
            or address.is_link_local
            or address.is_multicast
            or address.is_reserved
            or address.is_unspecified
            or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local)
        )
    )


def parse(url: str, production: bool) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an endpoint URL; UnsafeUrl when the form
    is refused (not http(s), credentials, no host, http in production)."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeUrl(f"url must be at most {MAX_URL_LENGTH} characters", param="url")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UnsafeUrl("url is not a valid URL", param="url") from None
    allowed = ("https",) if production else ("https", "http")
    if parts.scheme not in allowed:
        raise UnsafeUrl(f"url must use {' or '.join(allowed)}", param="url")
    if not parts.hostname:
        raise UnsafeUrl("url must name a host", param="url")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrl("url must not carry credentials", param="url")
    if any(ord(character) < 33 for character in url):
        raise UnsafeUrl("url must not contain spaces or control characters", param="url")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def _addresses(host: str, port: int) -> list[str]:
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise UnsafeUrl(f"url's host {host!r} does not resolve: {error}", param="url") from None
    return list(dict.fromkeys(str(info[4][0]) for info in found))


def resolve(url: str, production: bool) -> Target:
    """The checked target of `url`: in production every resolved address must be public
    (one bad address refuses the URL, since a resolver may answer any of them later)."""
    scheme, host, port, path = parse(url, production)
    addresses = _addresses(host, port)
    if production:
        for address in addresses:
            if not is_public_address(address):
                raise UnsafeUrl(
                    f"url's host resolves to {address}, which is not a public address",
                    param="url",
                )
    return Target(scheme, host, port, path, addresses[0])


def check(url: str, production: bool) -> None:
    """Refuse `url` for an endpoint (at create and update). In development the host need
    not resolve yet; in production it must, to public addresses only."""
    if production:
        resolve(url, production)
    else:
        parse(url, production)
