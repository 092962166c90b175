"""client/loadtest/spawn.py without starting a server: its tokens file and TLS checks."""

from __future__ import annotations

from pathlib import Path

from client.loadtest.spawn import NAMESPACE, SpawnedServer, tls_mismatch
from service.auth import Grant, Tokens


def test_a_token_makes_the_server_require_it_and_the_file_holds_no_secret() -> None:
    spawned = SpawnedServer(["--grace=1"], token="load-secret")
    assert spawned.args[-2] == "--tokens"
    path = Path(spawned.args[-1])
    assert "load-secret" not in path.read_text(encoding="utf-8")
    assert path.stat().st_mode & 0o077 == 0
    tokens = Tokens.load(path)
    assert tokens.check("load-secret") == Grant(namespace=NAMESPACE, writable=True)
    assert tokens.check("other") is None
    spawned.stop()  # never started: only the tokens folder to remove
    assert not path.parent.exists()


def test_the_users_tokens_file_wins_and_no_token_means_an_open_server() -> None:
    given = SpawnedServer(["--tokens=mine"], token="load-secret")
    assert given.private is None and given.args.count("--tokens") == 0
    assert "--tokens" not in SpawnedServer([]).args


def test_tls_on_one_side_only_is_named() -> None:
    assert tls_mismatch(["--tls-cert=s.pem", "--tls-key=s.key"], client_tls=True) is None
    assert tls_mismatch([], client_tls=False) is None
    assert "--server-arg=--tls-cert=FILE" in str(tls_mismatch([], client_tls=True))
    assert "add --tls" in str(tls_mismatch(["--tls-cert", "s.pem"], client_tls=False))
