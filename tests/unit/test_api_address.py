"""Where the API listens: `run --api [HOST:PORT]` and `serve --host --port`."""

from __future__ import annotations

import pytest

from paysched.api.server import parse_address
from paysched.cli import _api_flag_default
from paysched.errors import ConfigError


def test_run_api_alone_means_the_default_address() -> None:
    assert _api_flag_default(["run", "--api"]) == ["run", "--api=127.0.0.1:8080"]
    assert _api_flag_default(["run", "--api", "--help"]) == [
        "run",
        "--api=127.0.0.1:8080",
        "--help",
    ]
    assert _api_flag_default(["run", "--api", "0.0.0.0:9"]) == ["run", "--api", "0.0.0.0:9"]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:8080", ("127.0.0.1", 8080)),
        (":9000", ("127.0.0.1", 9000)),
        ("9000", ("127.0.0.1", 9000)),
        ("[::1]:80", ("::1", 80)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
    ],
)
def test_addresses(text: str, address: tuple[str, int]) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["host:http", "host:70000", "host:-1", "host:"])
def test_bad_addresses_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match="--api"):
        parse_address(text)


def test_the_listening_socket_is_tcp_so_responses_are_not_delayed() -> None:
    import socket

    from paysched.api.server import listen

    sock = listen("127.0.0.1", 0)
    try:
        # asyncio turns Nagle off only on sockets it knows are TCP (proto == IPPROTO_TCP).
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
