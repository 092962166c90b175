"""Tokens and namespaces: HELLO first, isolation, read-only tokens, reload."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from client.errors import Unauthorized
from client.events import subscribe
from protocol.frames import FrameType
from service.auth import TokenFileError, Tokens
from storage.embedded import EmbeddedValkey
from tests.support.harness import (
    ROOT,
    Running,
    make_config,
    reap,
    start_process,
    start_server,
    stop_server,
)
from tests.support.wire import WireClient

TOKENS = f"""
# token              namespace  mode
alice-secret         radiology  rw
sha256:{hashlib.sha256(b"bob-secret").hexdigest()}  radiology  ro
carol-secret         surgery    rw   # another key space
"""


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(TOKENS)
    return path


@pytest_asyncio.fixture
async def secured(valkey_server: EmbeddedValkey, tokens_file: Path) -> AsyncIterator[Running]:
    config = dataclasses.replace(make_config(), tokens=str(tokens_file))
    running = await start_server(valkey_server.url, config, Tokens.load(tokens_file))
    running.server.auth_failures.base = 0.01
    yield running
    await stop_server(running)


async def login(server: Running, token: str) -> WireClient:
    client = await server.client()
    reply = await client.request(FrameType.HELLO, {"version": 1, "token": token})
    assert reply.ok, reply.body
    return client


def test_token_file_parsing(tokens_file: Path) -> None:
    tokens = Tokens.load(tokens_file)
    alice = tokens.check("alice-secret")
    bob = tokens.check("bob-secret")
    assert alice is not None
    assert (alice.namespace, alice.writable) == ("radiology", True)
    assert bob is not None
    assert (bob.namespace, bob.writable) == ("radiology", False)
    assert tokens.check("sha256:" + hashlib.sha256(b"bob-secret").hexdigest()) is None
    assert tokens.check("nobody") is None
    assert tokens.check(None) is None


@pytest.mark.parametrize(
    ("text", "line"),
    [("ok ns rw\nbad line\n", 2), ("t ns rx\n", 1), ("sha256:abc ns ro\n", 1), ("# none\n", 0)],
)
def test_malformed_token_file_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(TokenFileError) as raised:
        Tokens.load(path)
    assert (f":{line}:" in str(raised.value)) if line else "no tokens" in str(raised.value)


def test_server_refuses_to_start_on_malformed_tokens(
    valkey_server: EmbeddedValkey, tmp_path: Path
) -> None:
    import subprocess
    import sys

    path = tmp_path / "tokens"
    path.write_text("good ns rw\nsecret-in-line-two\n")
    result = subprocess.run(
        [sys.executable, "server.py", "--valkey-url", valkey_server.url, "--tokens", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 2
    assert f"{path}:2:" in result.stderr
    assert "secret-in-line-two" not in result.stderr


@pytest.mark.asyncio
async def test_first_frame_must_be_hello(secured: Running) -> None:
    client = await secured.client()
    reply = await client.request(FrameType.STAT, {"key": "k"})
    assert reply.code == "unauthorized"
    assert reply.body["fatal"] is True
    assert await client.closed()
    await client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize("token", [None, "wrong", "sha256:" + "0" * 64])
async def test_wrong_token_is_unauthorized(secured: Running, token: str | None) -> None:
    client = await secured.client()
    reply = await client.request(FrameType.HELLO, {"version": 1, "token": token})
    assert reply.code == "unauthorized"
    assert reply.body["fatal"] is True
    assert "secret" not in reply.body["message"]
    assert await client.closed()
    await client.close()


@pytest.mark.asyncio
@pytest.mark.parametrize(("token", "says"), [(None, "needs a token"), ("wrong", "did not accept")])
async def test_a_subscriber_is_told_what_to_change(
    secured: Running, token: str | None, says: str
) -> None:
    # events/follow greet as every client does: the same refusal, the same hint.
    with pytest.raises(Unauthorized) as refused:
        await subscribe(secured.host, secured.port, token=token, timeout=5)
    assert says in (refused.value.hint or "")
    subscription = await subscribe(secured.host, secured.port, token="alice-secret", timeout=5)
    subscription.abort()  # then the server stops with its follower in XREAD BLOCK


@pytest.mark.asyncio
async def test_namespaces_are_separate_key_spaces(secured: Running, prefix: str) -> None:
    alice = await login(secured, "alice-secret")
    carol = await login(secured, "carol-secret")
    assert (await alice.put(prefix + "scan", b"radiology copy")).ok
    assert (await carol.put(prefix + "scan", b"surgery copy")).ok
    assert (await alice.get(prefix + "scan")).data == b"radiology copy"
    assert (await carol.get(prefix + "scan")).data == b"surgery copy"
    listed = await carol.request(FrameType.LIST, {"prefix": prefix})
    assert [f["key"] for f in listed.body["files"]] == [prefix + "scan"]
    assert (await carol.request(FrameType.DELETE, {"key": prefix + "scan"})).body == {
        "deleted": True
    }
    assert (await alice.get(prefix + "scan")).data == b"radiology copy"
    assert (await carol.request(FrameType.STAT, {"key": prefix + "scan"})).code == "not_found"
    for c in (alice, carol):
        await c.close()


@pytest.mark.asyncio
async def test_read_only_token(secured: Running, prefix: str) -> None:
    alice = await login(secured, "alice-secret")
    assert (await alice.put(prefix + "k", b"data")).ok
    bob = await login(secured, "bob-secret")
    assert (await bob.get(prefix + "k")).data == b"data"
    reply = await bob.request(FrameType.DELETE, {"key": prefix + "k"})
    assert reply.code == "forbidden"
    assert reply.body["fatal"] is False
    reply = await bob.request(FrameType.PUT, {"key": prefix + "k"})
    assert reply.code == "forbidden"
    assert reply.body["fatal"] is True
    assert (await alice.get(prefix + "k")).data == b"data"
    for c in (alice, bob):
        await c.close()


@pytest.mark.asyncio
async def test_repeated_failures_wait_longer(secured: Running) -> None:
    secured.server.auth_failures.base = 0.2
    waits = []
    for _ in range(3):
        client = await secured.client()
        started = time.monotonic()
        assert (await client.request(FrameType.HELLO, {"version": 1, "token": "x"})).code == (
            "unauthorized"
        )
        waits.append(time.monotonic() - started)
        await client.close()
    # 0.2, 0.4, 0.8 s: each at least its delay (an upper bound would be a timing assert).
    assert waits[0] >= 0.2
    assert waits[1] >= 0.4
    assert waits[2] >= 0.8


@pytest.mark.asyncio
async def test_sighup_reloads_tokens_without_dropping_connections(
    valkey_server: EmbeddedValkey, tokens_file: Path, prefix: str
) -> None:
    proc, port = start_process(valkey_server.url, "--tokens", str(tokens_file))
    try:
        alice = await WireClient.connect("127.0.0.1", port)
        assert (await alice.request(FrameType.HELLO, {"version": 1, "token": "alice-secret"})).ok
        await asyncio.to_thread(tokens_file.write_text, "dave-secret radiology rw\n")
        proc.send_signal(signal.SIGHUP)
        dave_ok = False
        for _ in range(50):
            dave = await WireClient.connect("127.0.0.1", port)
            reply = await dave.request(FrameType.HELLO, {"version": 1, "token": "dave-secret"})
            await dave.close()
            if reply.ok:
                dave_ok = True
                break
            await asyncio.sleep(0.1)
        assert dave_ok
        # Alice's connection survives the reload; her token is gone for new ones.
        assert (await alice.request(FrameType.PING, {"still": 1})).body == {"still": 1}
        again = await WireClient.connect("127.0.0.1", port)
        reply = await again.request(FrameType.HELLO, {"version": 1, "token": "alice-secret"})
        assert reply.code == "unauthorized"
        await again.close()
        await alice.close()
    finally:
        proc.terminate()
        reap(proc)


@pytest.mark.asyncio
async def test_without_tokens_hello_is_optional(client: WireClient) -> None:
    assert (await client.request(FrameType.PING, {})).ok
    reply = await client.request(FrameType.HELLO, {"version": 1, "token": "anything"})
    assert reply.ok
