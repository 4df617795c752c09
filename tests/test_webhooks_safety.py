"""Which addresses and URLs the dispatcher may call (app/services/webhooks/safety.py)."""

from __future__ import annotations

import pytest

from app.services.webhooks import safety

REFUSED = [
    "127.0.0.1",
    "127.8.9.10",
    "0.0.0.0",
    "10.0.0.1",
    "172.16.5.4",
    "192.168.1.1",
    "169.254.169.254",  # cloud metadata
    "169.254.1.1",
    "100.64.0.1",  # CGNAT
    "100.127.255.254",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.1",  # documentation
    "198.18.0.1",  # benchmarking
    "::1",
    "::",
    "fe80::1",
    "fc00::1",
    "fd00:ec2::254",  # AWS metadata over IPv6
    "ff02::1",
    "::ffff:127.0.0.1",  # IPv4-mapped
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "2002:7f00:1::",  # 6to4 of 127.0.0.1
    "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
    "2001:db8::1",
]
ALLOWED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "::ffff:8.8.8.8"]


@pytest.mark.parametrize("address", REFUSED)
def test_a_non_public_address_is_refused(address):
    assert not safety.is_public_address(address)


@pytest.mark.parametrize("address", ALLOWED)
def test_a_public_address_is_allowed(address):
    assert safety.is_public_address(address)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/hook",  # http
        "https://127.0.0.1/hook",
        "https://[::1]:8443/hook",
        "https://localhost/hook",
        "https://user:pw@example.com/hook",
        "https:///nohost",
        "ftp://example.com/",
    ],
)
def test_production_refuses_these_urls(url):
    with pytest.raises(safety.UnsafeUrl) as refused:
        safety.check(url, production=True)
    assert refused.value.param == "url"


def test_development_allows_http_on_loopback():
    safety.check("http://127.0.0.1:8080/hook", production=False)
    target = safety.resolve("http://localhost:8080/x?y=1", production=False)
    assert (target.host, target.port, target.path) == ("localhost", 8080, "/x?y=1")
    assert safety.is_public_address(target.address) is False


def test_the_send_connects_to_the_checked_address_with_the_names_host_header():
    """The address is resolved once; the connection goes there, Host names the URL's host."""
    from app.services.webhooks.dispatch import _PinnedHTTPConnection

    target = safety.Target("http", "hooks.example", 8080, "/x", "127.0.0.1")
    connection = _PinnedHTTPConnection(target, timeout=1)
    assert (connection.host, connection.address) == ("hooks.example", "127.0.0.1")
