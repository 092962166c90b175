"""Messages a person can act on: each mistake a new user makes, and what the CLI says about it.

Real server processes: with tokens, with TLS, with mutual TLS, and plain;
and, for what a probe says about a peer that is no Valise server, a bare
TCP listener. Each test runs the command as typed at a console and checks
the words that tell the person what to change.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme

from storage.embedded import EmbeddedValkey
from tests.integration.test_cli import cli
from tests.support.harness import ROOT, reap, start_process
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    ca.cert_pem.write_to_path(str(root / "ca.pem"))
    server.cert_chain_pems[0].write_to_path(str(root / "server.pem"))
    server.private_key_pem.write_to_path(str(root / "server.key"))
    ca.issue_cert("scanner-1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "client.pem")
    )
    return root


def serve(valkey_server: EmbeddedValkey, *args: str) -> Iterator[int]:
    proc, port = start_process(valkey_server.url, "--shutdown-grace", "1", *args)
    yield port
    proc.send_signal(signal.SIGTERM)
    reap(proc)


@pytest.fixture(scope="module")
def plain(valkey_server: EmbeddedValkey) -> Iterator[int]:
    yield from serve(valkey_server)


@pytest.fixture(scope="module")
def tls(valkey_server: EmbeddedValkey, pki: Path) -> Iterator[int]:
    yield from serve(
        valkey_server, "--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")
    )


@pytest.fixture(scope="module")
def mtls(valkey_server: EmbeddedValkey, pki: Path) -> Iterator[int]:
    yield from serve(
        valkey_server,
        *("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")),
        *("--tls-client-ca", str(pki / "ca.pem")),
    )


@pytest.fixture(scope="module")
def with_tokens(
    valkey_server: EmbeddedValkey, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[int]:
    tokens = tmp_path_factory.mktemp("tokens") / "tokens"
    tokens.write_text("scanner-secret  radiology  rw\n")
    yield from serve(valkey_server, "--tokens", str(tokens))


def lines(stderr: bytes) -> list[str]:
    return stderr.decode().splitlines()


def test_a_server_that_wants_a_token_says_so_and_names_valise_token(with_tokens: int) -> None:
    none = cli(with_tokens, "ping", "--retries", "0")
    assert none.returncode == 1, none.stderr
    assert lines(none.stderr) == [
        "valise: unauthorized: unknown token",
        "  hint: this server needs a token: set VALISE_TOKEN (or give --token TOKEN)",
    ]
    wrong = cli(with_tokens, "ping", "--retries", "0", "--token", "guess")
    assert wrong.returncode == 1, wrong.stderr
    assert "did not accept this token: check VALISE_TOKEN" in wrong.stderr.decode()
    good = cli(with_tokens, "ping", "--token", "scanner-secret")
    assert good.returncode == 0, good.stderr
    assert good.stdout.startswith(b"pong from valise/")


def test_a_plain_client_against_a_tls_server_is_told_to_add_tls(tls: int) -> None:
    result = cli(tls, "ping", "--retries", "0")
    assert result.returncode == 5, result.stderr
    assert "hint: the server hung up without a word: if it uses TLS, add --tls" in (
        result.stderr.decode()
    )


def test_mutual_tls_without_a_client_certificate_is_told_which_options(
    mtls: int, pki: Path
) -> None:
    result = cli(mtls, "ping", "--retries", "0", "--tls-ca", str(pki / "ca.pem"))
    assert result.returncode == 5, result.stderr
    text = result.stderr.decode()
    assert "client certificate (mutual TLS)" in text
    assert "--tls-cert FILE and --tls-key FILE" in text


def test_tls_against_a_plain_server_and_an_untrusted_certificate(
    plain: int, tls: int, pki: Path
) -> None:
    result = cli(plain, "ping", "--tls-ca", str(pki / "ca.pem"))
    assert result.returncode == 5, result.stderr
    assert "hint: the server does not use TLS on this port" in result.stderr.decode()
    untrusted = cli(tls, "ping", "--tls")  # the system's CAs do not know the test CA
    assert untrusted.returncode == 5, untrusted.stderr
    assert "--tls-ca FILE (VALISE_TLS_CA)" in untrusted.stderr.decode()


def test_ping_over_tls_and_mutual_tls_with_the_right_options(
    tls: int, mtls: int, pki: Path
) -> None:
    trust = ("--tls-ca", str(pki / "ca.pem"))
    for port, mine in ((tls, ()), (mtls, ("--tls-cert", str(pki / "client.pem")))):
        result = cli(port, "ping", "--json", *trust, *mine)
        assert result.returncode == 0, result.stderr
        answer = json.loads(result.stdout)
        assert answer["server"]["version"] == 1 and "t" in answer["reply"]


def _read_hello(conn: socket.socket) -> None:
    header = conn.recv(5, socket.MSG_WAITALL)
    conn.recv(int.from_bytes(header[1:], "big"), socket.MSG_WAITALL)


@pytest.fixture
def stranger() -> Iterator[Callable[[Callable[[socket.socket], object]], int]]:
    """A TCP port whose listener reads the HELLO, then answers with a function of its socket."""
    threads: list[threading.Thread] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def listen(answer: Callable[[socket.socket], object]) -> int:
            def serve() -> None:
                conn, _ = listener.accept()
                with conn:
                    _read_hello(conn)
                    answer(conn)

            threads.append(threading.Thread(target=serve, daemon=True))
            threads[-1].start()
            return int(listener.getsockname()[1])

        yield listen
        for thread in threads:
            thread.join(10)


@pytest.mark.parametrize(
    ("answer", "options", "code", "said"),
    [
        (
            lambda conn: conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n"),
            [],
            1,
            ["valise: protocol_error: unknown frame type 0x48"],
        ),
        (
            lambda conn: None,  # hangs up
            [],
            5,
            [
                "valise: connection_lost: server closed the connection",
                "  hint: the server hung up without a word: if it uses TLS, add --tls "
                "(and --tls-ca FILE for a private CA; VALISE_TLS_CA)",
            ],
        ),
        (
            lambda conn: conn.recv(1),  # says nothing until the client gives up
            ["--timeout", "0.5"],
            5,
            ["valise: client_timeout: no reply from the server within 0.5 s"],
        ),
    ],
    ids=["garbage", "hangs-up", "silent"],
)
def test_ping_names_what_is_wrong_with_a_peer_that_is_no_valise_server(
    stranger: Callable[[Callable[[socket.socket], object]], int],
    answer: Callable[[socket.socket], object],
    options: list[str],
    code: int,
    said: list[str],
) -> None:
    result = cli(stranger(answer), "ping", *options)
    assert result.returncode == code, result.stderr
    assert lines(result.stderr) == said


@pytest.mark.parametrize("address", ["valise://127.0.0.1:{port}", "tcp://127.0.0.1:{port}/"])
def test_a_url_for_server_is_a_usage_error_at_once(plain: int, address: str) -> None:
    result = cli(plain, "--server", address.format(port=plain), "ping")
    assert result.returncode == 2, result.stderr
    assert f"not a URL: try --server 127.0.0.1:{plain}" in result.stderr.decode()
    assert "connect" not in result.stderr.decode()


def test_a_dead_server_is_retried_out_loud_and_ping_fails_at_once() -> None:
    dead = free_port()
    result = cli(dead, "--retries", "2", "--retry-max-wait", "0.1", "stat", "scan")
    lines = result.stderr.decode().splitlines()
    assert result.returncode == 5, lines
    assert [line.rsplit(";", 1)[-1].split(" in ")[0] for line in lines[:2]] == [
        " retry 1 of 2",
        " retry 2 of 2",
    ]
    assert len(lines) == 3 and f"cannot connect to 127.0.0.1:{dead}" in lines[2]
    probe = cli(dead, "ping")  # the default --retries 8 would take many seconds
    assert probe.returncode == 5
    assert "retry" not in probe.stderr.decode()


def test_a_missing_output_folder_is_named(plain: int, prefix: str, tmp_path: Path) -> None:
    assert cli(plain, "put", "-", prefix + "t1.nii", stdin=b"scan").returncode == 0
    missing = tmp_path / "no such folder" / "sub"
    result = cli(plain, "get", prefix + "t1.nii", "-o", str(missing / "t1.nii"))
    assert result.returncode == 1, result.stderr
    assert lines(result.stderr) == [f"valise: output folder does not exist: {missing}"]
    assert not (tmp_path / "no such folder").exists()


def test_not_found_names_the_key(plain: int, prefix: str, tmp_path: Path) -> None:
    key = prefix + "patients/1234/t1.nii"
    for args in (["stat", key], ["get", key, "-o", str(tmp_path / "x")]):
        result = cli(plain, *args)
        assert result.returncode == 3, result.stderr
        assert lines(result.stderr) == [f"valise: not_found: {key}: no such file"]


def test_json_makes_errors_json_too(plain: int, prefix: str) -> None:
    missing = cli(plain, "stat", prefix + "nope", "--json")
    assert (missing.returncode, missing.stdout) == (3, b"")
    assert json.loads(missing.stderr) == {
        "error": {
            "code": "not_found",
            "message": "no such file",
            "key": prefix + "nope",
            "exit_code": 3,
        }
    }
    usage = cli(plain, "ls", "--limit", "many", "--json")
    assert usage.returncode == 2
    error = json.loads(usage.stderr)["error"]
    assert (error["code"], error["exit_code"]) == ("usage", 2)
    assert "--limit" in error["message"]
    url = cli(plain, "--json", "--server", "valise://h:1", "ping")
    assert json.loads(url.stderr)["error"]["message"].endswith("try --server h:1")


def test_decode_exits_with_the_error_it_printed(plain: int, prefix: str) -> None:
    request = cli(plain, "frame", "stat", prefix + "nope").stdout
    reply = subprocess.run(
        [sys.executable, "-c", _SEND, str(plain)],
        input=request,
        capture_output=True,
        timeout=30,
        check=True,
    ).stdout
    result = cli(plain, "decode", stdin=reply)
    assert result.returncode == 3, result.stderr
    assert result.stdout.decode().startswith('ERROR {"code": "not_found"')


#: What ``nc -N`` does: send stdin, half-close, print the reply.
_SEND = """
import socket, sys
with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=10) as s:
    s.sendall(sys.stdin.buffer.read())
    s.shutdown(socket.SHUT_WR)
    while chunk := s.recv(65536):
        sys.stdout.buffer.write(chunk)
"""


def test_a_watch_without_a_token_says_so(with_tokens: int, tmp_path: Path) -> None:
    (tmp_path / "f.dcm").write_bytes(b"x")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(tmp_path / "state")}
    env.pop("VALISE_TOKEN", None)
    watch = ["watch", str(tmp_path), "--once", "--settle", "0"]
    result = subprocess.run(
        [sys.executable, "-m", "client", "--server", f"127.0.0.1:{with_tokens}", *watch],
        capture_output=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert "server refuses this agent: unauthorized" in result.stderr.decode()
    assert "set VALISE_TOKEN" in result.stderr.decode()
