"""service/auth.py: the failed-authentication delay (the tokens file is tested end to end)."""

from __future__ import annotations

from service.auth import FailureDelay


def test_failed_authentication_is_slowed_per_address() -> None:
    delay = FailureDelay(base=0.1, cap=1.0)
    assert [delay.failed("10.0.0.1") for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert delay.failed("10.0.0.2") == 0.1
    delay.succeeded("10.0.0.1")
    assert delay.failed("10.0.0.1") == 0.1
    assert delay.failures_total == 8


def test_a_success_forgives_only_its_own_credentials_failures() -> None:
    delay = FailureDelay(base=0.1, cap=10.0)
    # A guesser holding one valid token cannot reset its delay with it.
    assert [delay.failed("10.0.0.1", f"guess-{n}") for n in range(3)] == [0.1, 0.2, 0.4]
    delay.succeeded("10.0.0.1", "valid-token")
    assert delay.failed("10.0.0.1", "guess-3") == 0.8
    # A mistyped token, then the right one: that failure is forgiven, not the guesses.
    assert delay.failed("10.0.0.1", "valid-tokn") == 1.6
    delay.succeeded("10.0.0.1", "valid-tokn")
    assert delay.failed("10.0.0.1", "guess-4") == 1.6


def test_someone_elses_success_resets_nothing() -> None:
    delay = FailureDelay(base=0.1, cap=10.0)
    assert [delay.failed("192.0.2.1", "x") for _ in range(3)] == [0.1, 0.2, 0.4]
    delay.succeeded("192.0.2.2", "x")  # another client, the same token even
    assert delay.failed("192.0.2.1", "x") == 0.8
    delay.succeeded("192.0.2.1", "x")
    assert delay.failed("192.0.2.1", "x") == 0.1


def test_memory_is_bounded_per_address_and_in_all() -> None:
    delay = FailureDelay(base=0.1, cap=10.0)
    for n in range(FailureDelay.PER_ADDRESS + 10):
        delay.failed("10.0.0.1", f"guess-{n}")
    # Untracked guesses still count, and cannot be forgiven.
    delay.succeeded("10.0.0.1", f"guess-{FailureDelay.PER_ADDRESS + 5}")
    assert delay.failed("10.0.0.1", "another") == 10.0
    for n in range(FailureDelay.ADDRESSES + 5):
        delay.failed(f"addr-{n}")
    assert len(delay._recent) == FailureDelay.ADDRESSES
