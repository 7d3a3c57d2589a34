from __future__ import annotations

import pytest

from paysched.errors import InvalidInput
from paysched.notify.targets import normalise_targets
from paysched.notify.webhook import SignatureError, sign, verify

BODY = b'{"id":"pay-1-0:succeeded","event":"payment.succeeded"}'


def test_known_answer_vector() -> None:
    """Computed outside paysched: printf '1800000000.<BODY>' | openssl dgst -sha256 -hmac s3cret"""
    expected = "2f70bf0f0c122685ccbf153531d29dc91f64ce06650ec93c3cce9a366a5d7e1b"
    assert sign("s3cret", BODY, 1_800_000_000) == f"t=1800000000,v1={expected}"


def test_valid_signature_verifies() -> None:
    header = sign("s3cret", BODY, 1_800_000_000)
    verify("s3cret", header, BODY, now=1_800_000_100)


@pytest.mark.parametrize(
    ("secret", "body", "now", "problem"),
    [
        ("wrong", BODY, 1_800_000_000, "mismatch"),
        ("s3cret", BODY.replace(b"succeeded", b"failed"), 1_800_000_000, "mismatch"),
        ("s3cret", BODY, 1_800_000_000 + 301, "tolerance"),  # a replay, too late
        ("s3cret", BODY, 1_800_000_000 - 301, "tolerance"),
    ],
)
def test_bad_signatures_are_rejected(secret: str, body: bytes, now: int, problem: str) -> None:
    header = sign("s3cret", BODY, 1_800_000_000)
    with pytest.raises(SignatureError, match=problem):
        verify(secret, header, body, now=now)


@pytest.mark.parametrize("header", ["", "t=abc,v1=00", "v1=00", "garbage"])
def test_malformed_headers_are_rejected(header: str) -> None:
    with pytest.raises(SignatureError):
        verify("s3cret", header, BODY, now=1_800_000_000)


def test_targets_are_validated() -> None:
    assert normalise_targets(["telegram:42", "log", "telegram:42", "webhook:https://x/y"]) == [
        "telegram:42",
        "log",
        "webhook:https://x/y",
    ]
    ports = ["webhook:http://x:0/", "webhook:https://x:65536/", "webhook:http://x:-1/"]
    for bad in ["telegram:abc def", "sms:123", "webhook:ftp://x", "log:x", "telegram", *ports]:
        with pytest.raises(InvalidInput) as info:
            normalise_targets([bad])
        assert info.value.field == "notify"


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://localhost:8080/",
        "http://[::1]/",
        "http://10.1.2.3/",
        "http://169.254.169.254/latest",
        "http://[::ffff:127.0.0.1]/",
        # Numeric forms every resolver reads as an address: 127.0.0.1 and 10.0.0.1.
        "http://127.1/",
        "http://2130706433/",
        "http://0x7f000001/",
        "http://10.1/",
        # Shared address space, where a cloud's metadata service may answer.
        "http://100.64.0.1/",
        "http://100.127.255.254/",
        "http://100.100.100.200/",
        # IPv6 forms carrying an internal IPv4 address: 6to4 of 127.0.0.1 and 10.0.0.1, NAT64 of
        # 127.0.0.1 and 100.64.0.1, IPv4-compatible 127.0.0.1 and IPv4-mapped (any address).
        "http://[2002:7f00:1::]/",
        "http://[2002:a00:1::1]/",
        "http://[64:ff9b::7f00:1]/",
        "http://[64:ff9b::6440:1]/",
        "http://[::127.0.0.1]/",
        "http://[::ffff:8.8.8.8]/",
        # Teredo tunnels to any IPv4 address; multicast and the rest of non-global space.
        "http://[2001::1]/",
        "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
        "http://224.0.0.1/",
        "http://[ff02::1]/",
        "http://[fd00::1]/",
        "http://192.0.2.1/",
    ],
)
def test_webhooks_pointing_inwards_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(InvalidInput, match="ALLOW_PRIVATE"):
        normalise_targets([f"webhook:{url}"])
    assert normalise_targets([f"webhook:{url}"], allow_private=True) == [f"webhook:{url}"]


@pytest.mark.parametrize(
    "url",
    [
        "https://8.8.8.8/x",
        "https://[2606:4700::1]/",
        "https://hooks.example.com:8443/",
        # 6to4 of a public IPv4 address is as public as that address.
        "https://[2002:808:808::1]/",
    ],
)
def test_public_webhooks_are_accepted(url: str) -> None:
    assert normalise_targets([f"webhook:{url}"]) == [f"webhook:{url}"]
