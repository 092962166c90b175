"""Unit tests for service/attachments.py: one holder per upload, and the handover."""

from __future__ import annotations

import asyncio

import pytest

from service.attachments import Attachments

pytestmark = pytest.mark.asyncio


async def test_a_resume_waits_until_the_holder_let_go() -> None:
    attachments = Attachments()
    holder = attachments.attach(("ns", "u1"))
    order: list[str] = []

    async def hold() -> None:
        await holder.wanted  # the holder stops reading...
        order.append("holder stored its bytes")
        attachments.release(holder)  # ...stores what it read, and lets go

    holding = asyncio.create_task(hold())
    async with attachments.handover(("ns", "u1"), wait=5):
        order.append("resume takes over")
        attachments.attach(("ns", "u1"))
    await holding
    assert order == ["holder stored its bytes", "resume takes over"]
    assert len(attachments) == 1


async def test_a_holder_that_never_lets_go_delays_a_resume_only_so_long() -> None:
    attachments = Attachments()
    stuck = attachments.attach(("ns", "u1"))
    async with attachments.handover(("ns", "u1"), wait=0.01):
        newer = attachments.attach(("ns", "u1"))
    assert stuck.wanted.done()
    attachments.release(stuck)  # late: must not drop the newer holder
    assert len(attachments) == 1
    attachments.release(newer)
    assert len(attachments) == 0


async def test_other_namespaces_and_ids_are_left_alone() -> None:
    attachments = Attachments()
    mine = attachments.attach(("radiology", "u1"))
    other = attachments.attach(("radiology", "u2"))
    async with attachments.handover(("surgery", "u1"), wait=0.01):
        pass
    async with attachments.handover(("radiology", "u3"), wait=0.01):
        pass
    assert not mine.wanted.done()
    assert not other.wanted.done()


async def test_resumes_of_one_upload_take_turns() -> None:
    attachments = Attachments()
    inside = 0
    most = 0

    async def resume() -> None:
        nonlocal inside, most
        async with attachments.handover(("ns", "u1"), wait=1):
            inside += 1
            most = max(most, inside)
            await asyncio.sleep(0)
            attachment = attachments.attach(("ns", "u1"))
            inside -= 1
        attachments.release(attachment)

    await asyncio.gather(*(resume() for _ in range(5)))
    assert most == 1
    assert len(attachments) == 0
