"""storage/lane.py against a real Valkey: script calls in flight share one write.

Commands issued in the same loop pass go out together on one connection;
each caller must still get its own reply, its own error reply, its own
NOSCRIPT, and a cancel or a timeout must not hand anyone a wrong reply.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import valkey.exceptions as valkey_exc

from storage.calls import translate
from storage.clients import single_client
from storage.config import StorageConfig
from storage.embedded import EmbeddedValkey
from storage.errors import PasswordRefused
from tests.support import harness

# Busy for ARGV[1] loop turns (about 15 ns each), then answers ARGV[2]; Valkey serves
# nothing else meanwhile. (TIME cannot pace it: a script sees the time frozen.)
SLOW = """
local x = 0
for i = 1, tonumber(ARGV[1]) do x = x + 1 end
return ARGV[2]
"""


async def _client(url: str, timeout: float) -> Any:
    config = StorageConfig(url=url, chunk_size=1024, staging_ttl=60, grace=0, timeout=timeout)
    return single_client(config)


async def _close(client: Any) -> None:
    await client.aclose()
    await client.connection_pool.disconnect()  # a pool passed in is not closed with it


@pytest_asyncio.fixture
async def lean(valkey_server: EmbeddedValkey) -> AsyncIterator[Any]:
    if harness.CLUSTER:
        pytest.skip("the lane serves a single node only")
    client = await _client(valkey_server.url, 5.0)
    yield client
    await _close(client)


@pytest.mark.asyncio
async def test_replies_reach_their_callers_in_order_under_concurrency(lean: Any) -> None:
    words = [f"word-{n}" for n in range(300)]
    replies = await asyncio.gather(*(lean.lane.execute(("ECHO", word)) for word in words))
    assert [reply.decode() for reply in replies] == words
    # 300 commands in one pass went out in batches, not one connection each.
    pool = lean.connection_pool
    assert len(pool._available_connections) + len(pool._in_use_connections) < 10


@pytest.mark.asyncio
async def test_an_error_reply_stays_with_its_command(lean: Any, prefix: str) -> None:
    key = f"{prefix}text"
    set_reply, incr_reply, echo_reply = await asyncio.gather(
        lean.lane.execute(("SET", key, "not a number", "PX", 60000)),
        lean.lane.execute(("INCR", key)),
        lean.lane.execute(("ECHO", "after")),
    )
    assert set_reply is True or set_reply == b"OK"
    assert isinstance(incr_reply, valkey_exc.ResponseError)
    assert echo_reply == b"after"


@pytest.mark.asyncio
async def test_noscript_for_one_command_only(lean: Any) -> None:
    script = lean.register_script("return ARGV[1]")
    await lean.script_flush()  # as after a Valkey restart: the script must be loaded again
    missing, first, second = await asyncio.gather(
        lean.lane.execute(("EVALSHA", "0" * 40, 0)),
        script(args=["one"]),
        lean.lane.execute(("ECHO", "two")),
    )
    assert isinstance(missing, valkey_exc.NoScriptError)
    assert (first, second) == (b"one", b"two")


@pytest.mark.asyncio
async def test_a_cancelled_caller_does_not_shift_the_replies(lean: Any) -> None:
    slow = lean.register_script(SLOW)
    await lean.script_load(SLOW)
    before = asyncio.ensure_future(lean.lane.execute(("ECHO", "before")))
    cancelled = asyncio.ensure_future(slow(args=[20_000_000, "slow"]))
    after = asyncio.ensure_future(lean.lane.execute(("ECHO", "after")))
    never_sent = asyncio.ensure_future(lean.lane.execute(("ECHO", "never")))
    await asyncio.sleep(0)
    never_sent.cancel()  # before the batch is written: the command is dropped
    await asyncio.sleep(0.05)  # the batch is out, Valkey is busy with the slow one
    cancelled.cancel()
    assert await before == b"before"
    assert await after == b"after"
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    assert never_sent.cancelled()
    # The connection goes on serving in order.
    assert await lean.lane.execute(("ECHO", "next")) == b"next"


@pytest.mark.asyncio
async def test_a_batch_past_its_deadline_times_out_and_the_lane_recovers(
    valkey_server: EmbeddedValkey, vk: Any
) -> None:
    if harness.CLUSTER:
        pytest.skip("the lane serves a single node only")
    client = await _client(valkey_server.url, 0.2)
    try:
        slow = client.register_script(SLOW)
        await client.script_load(SLOW)
        late = await asyncio.gather(
            slow(args=[60_000_000, "slow"]),
            client.lane.execute(("ECHO", "queued behind it")),
            return_exceptions=True,
        )
        assert all(isinstance(reply, valkey_exc.TimeoutError) for reply in late)
        assert vk.ping()  # answered once the script ends
        assert await client.lane.execute(("ECHO", "again")) == b"again"
    finally:
        await _close(client)


@pytest.mark.asyncio
async def test_a_refused_password_reaches_every_command_of_the_batch(
    valkey_server: EmbeddedValkey,
) -> None:
    if harness.CLUSTER:
        pytest.skip("the lane serves a single node only")
    password = valkey_server.url.split("://:", 1)[1].split("@", 1)[0]
    url = valkey_server.url.replace(password, "not-the-password", 1)
    client = await _client(url, 5.0)
    try:
        replies = await asyncio.gather(
            *(client.lane.execute(("ECHO", str(n))) for n in range(3)), return_exceptions=True
        )
        refusals = [translate(reply) for reply in replies if isinstance(reply, Exception)]
        assert len(refusals) == 3
        assert all(isinstance(refusal, PasswordRefused) for refusal in refusals)
    finally:
        await _close(client)
