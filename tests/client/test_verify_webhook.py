"""`verify_webhook` agrees with the `standardwebhooks` package, the independent verifier.

Both ways: what the package signs verifies with ours, what ours accepts the package
accepts, and a tampered body, id, timestamp or signature is refused by both. Hypothesis
draws the secrets, ids, bodies and tamperings.
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import given, settings
from hypothesis import strategies as st

from metering_client import WebhookVerificationError, verify_webhook


def now() -> int:
    """This moment in unix seconds (read per test: a module constant goes stale while a
    long suite runs, and the package checks against the real clock)."""
    return int(time.time())


secrets = st.binary(min_size=1, max_size=64).map(
    lambda key: "whsec_" + base64.b64encode(key).decode()
)
message_ids = st.from_regex(r"msg_[A-Z2-7]{26}", fullmatch=True)
bodies = st.dictionaries(
    st.text(max_size=10), st.one_of(st.integers(), st.text(max_size=20), st.none()), max_size=5
).map(lambda data: json.dumps({"type": "webhook.test", "data": data}).encode())


def package_headers(secret: str, message_id: str, timestamp: int, body: bytes) -> dict:
    """Headers of a delivery signed by the standardwebhooks package."""
    signature = standardwebhooks.Webhook(secret).sign(
        message_id, datetime.fromtimestamp(timestamp, UTC), body
    )
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature,
    }


def both_refuse(secret: str, body: bytes, headers: dict) -> None:
    with pytest.raises(WebhookVerificationError):
        verify_webhook(body, headers, secret)
    with pytest.raises(standardwebhooks.WebhookVerificationError):
        standardwebhooks.Webhook(secret).verify(body, headers)


@settings(max_examples=150, deadline=None)
@given(secret=secrets, message_id=message_ids, body=bodies, skew=st.integers(-290, 290))
def test_what_the_package_signs_verifies_with_ours(secret, message_id, body, skew):
    sent = now()
    headers = package_headers(secret, message_id, sent + skew, body)
    assert verify_webhook(body, headers, secret) == json.loads(body)
    assert verify_webhook(body.decode(), headers, secret) == json.loads(body)
    assert standardwebhooks.Webhook(secret).verify(body, headers) == json.loads(body)


@settings(max_examples=150, deadline=None)
@given(
    secret=secrets,
    message_id=message_ids,
    body=bodies,
    position=st.integers(min_value=0),
    part=st.sampled_from(["body", "id", "timestamp", "signature"]),
)
def test_a_tampered_delivery_is_refused_by_both(secret, message_id, body, position, part):
    sent = now()
    headers = package_headers(secret, message_id, sent, body)
    if part == "body":
        index = position % len(body)
        body = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]
    elif part == "id":
        headers["webhook-id"] = message_id + "x"
    elif part == "timestamp":
        headers["webhook-timestamp"] = str(sent + 1 + position % 60)
    else:
        digest = bytearray(base64.b64decode(headers["webhook-signature"][3:]))
        digest[position % len(digest)] ^= 0x80
        headers["webhook-signature"] = "v1," + base64.b64encode(bytes(digest)).decode()
    both_refuse(secret, body, headers)


@settings(max_examples=50, deadline=None)
@given(right=secrets, wrong=secrets, message_id=message_ids, body=bodies)
def test_another_secret_is_refused_by_both(right, wrong, message_id, body):
    sent = now()
    if base64.b64decode(right[6:]) == base64.b64decode(wrong[6:]):
        return
    both_refuse(wrong, body, package_headers(right, message_id, sent, body))


def test_a_timestamp_outside_the_tolerance_is_refused_by_both():
    sent = now()
    secret, body = "whsec_" + base64.b64encode(b"k" * 24).decode(), b'{"type":"x"}'
    for timestamp in (sent - 400, sent + 400):
        both_refuse(secret, body, package_headers(secret, "msg_1", timestamp, body))
    old = package_headers(secret, "msg_1", sent - 400, body)
    assert verify_webhook(body, old, secret, tolerance=600)["type"] == "x"
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(body, old, secret, tolerance=60)
    late = package_headers(secret, "msg_1", sent, body)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify_webhook(body, late, secret, now=sent + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify_webhook(body, late, secret, now=sent - 301)


def test_any_of_several_secrets_and_several_signatures_verify():
    """During a rotation the service signs with both secrets; a receiver may hold either,
    or both while it rolls the new one out."""
    sent = now()
    old, new = (("whsec_" + base64.b64encode(k * 32).decode()) for k in (b"o", b"n"))
    body = b'{"type":"webhook.test","timestamp":"2026-12-06T00:00:00Z","data":{}}'
    by_old = package_headers(old, "msg_r", sent, body)
    by_new = package_headers(new, "msg_r", sent, body)
    signatures = f"{by_new['webhook-signature']} v1a,xyz {by_old['webhook-signature']}"
    both = dict(by_new, **{"webhook-signature": signatures})
    for secret in (old, new, [old, new], [new, old]):
        assert verify_webhook(body, both, secret)["type"] == "webhook.test"
    for secret in (old, new):
        assert standardwebhooks.Webhook(secret).verify(body, both)["type"] == "webhook.test"
    assert verify_webhook(body, by_old, [new, old])["type"] == "webhook.test"
    other = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(WebhookVerificationError, match="no signature matches"):
        verify_webhook(body, by_old, [new, other])


def test_headers_in_any_case_and_missing_ones():
    sent = now()
    secret, body = "whsec_" + base64.b64encode(b"s" * 32).decode(), b'{"type":"t"}'
    headers = package_headers(secret, "msg_c", sent, body)
    titled = {name.title(): value for name, value in headers.items()}
    assert verify_webhook(body, titled, secret)["type"] == "t"
    for missing in headers:
        partial = {k: v for k, v in headers.items() if k != missing}
        with pytest.raises(WebhookVerificationError, match=missing):
            verify_webhook(body, partial, secret)


def test_garbled_headers_and_bodies_are_refused():
    sent = now()
    secret = "whsec_" + base64.b64encode(b"g" * 32).decode()
    body = b"[1, 2]"
    headers = package_headers(secret, "msg_g", sent, body)
    with pytest.raises(WebhookVerificationError, match="JSON object"):
        verify_webhook(body, headers, secret)  # signed, but not a payload of ours
    for timestamp in ("abc", "1e9", f"{sent}.5", f" {sent}", "-1"):
        with pytest.raises(WebhookVerificationError, match="unix seconds"):
            verify_webhook(body, dict(headers, **{"webhook-timestamp": timestamp}), secret)
    for signature in ("v1,!!!", "v2," + headers["webhook-signature"][3:], "nonsense"):
        with pytest.raises(WebhookVerificationError, match="no signature"):
            verify_webhook(body, dict(headers, **{"webhook-signature": signature}), secret)


def test_a_malformed_secret_is_the_receivers_mistake():
    sent = now()
    body = b"{}"
    headers = {"webhook-id": "m", "webhook-timestamp": str(sent), "webhook-signature": "v1,AA=="}
    for secret in ("whsec_not base64!", "whsec_", []):
        with pytest.raises(ValueError):
            verify_webhook(body, headers, secret)
