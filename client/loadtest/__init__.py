"""Load test: ``python -m client.loadtest [--spawn] [--clients N] [--duration S] ...``."""

from __future__ import annotations

from .workload import HashSink, KeyState, LoadTest, Payload, main, parse_mix, parse_sizes

__all__ = ["HashSink", "KeyState", "LoadTest", "Payload", "main", "parse_mix", "parse_sizes"]
