"""tests/tools/bench_small.py's CPU split: the milliseconds per pair the bench prints."""

from __future__ import annotations

import pytest

from tests.tools.bench_small import per_pair_ms


def test_a_valise_round_splits_server_valkey_and_client() -> None:
    used = {"server": 1.2, "valkey": 0.3, "client": 0.9}
    assert per_pair_ms(used, 2000.0) == pytest.approx(
        {"server_ms": 0.6, "valkey_ms": 0.15, "client_ms": 0.45}
    )


def test_a_clusters_nodes_add_up_to_one_valkey_figure() -> None:
    used = {"valkey": 0.1, "valkey1": 0.2, "valkey2": 0.3, "client": 0.5}
    got = per_pair_ms(used, 1000.0)
    assert got == pytest.approx({"valkey_ms": 0.6, "client_ms": 0.5})
    assert "server_ms" not in got  # a raw round meters no Valise server


def test_no_pairs_does_not_divide_by_zero() -> None:
    assert per_pair_ms({"valkey": 0.01, "client": 0.02}, 0.0) == pytest.approx(
        {"valkey_ms": 10.0, "client_ms": 20.0}
    )
