"""``python -m client.loadtest``: short verified runs, plain and with TLS and a token."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trustme

from storage.embedded import EmbeddedValkey
from tests.support.harness import ROOT, reap, start_process

SHORT = ["--clients", "2", "--sizes", "4KiB:3,300KiB:1", "--quiet"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A private CA and a server certificate for 127.0.0.1, made by the test."""
    root = tmp_path_factory.mktemp("pki")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    paths = {"ca": root / "ca.pem", "cert": root / "server.pem", "key": root / "server.key"}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["cert"]))
    server.private_key_pem.write_to_path(str(paths["key"]))
    return paths


def loadtest(*args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VALISE_")}
    if token is not None:
        env["VALISE_TOKEN"] = token
    return subprocess.run(
        [sys.executable, "-m", "client.loadtest", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def assert_clean(proc: subprocess.CompletedProcess[str], out: Path) -> dict[str, Any]:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result: dict[str, Any] = json.loads(out.read_text())
    assert result["exit_code"] == 0
    assert result["corruptions"] == 0, result["corruption_details"]
    assert result["anomalies"] == 0, result["anomaly_details"]
    assert result["errors_by_code"] == {}, result["error_samples"]
    # Counted by a LIST of the prefix after the deletes.
    assert result["cleanup"]["remaining"] == 0
    return result


def test_spawned_run_is_clean_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "loadtest.json"
    proc = loadtest("--spawn", "--duration", "3", *SHORT, "--clients", "4", "--json", str(out))
    result = assert_clean(proc, out)
    for op in ("put", "get", "stat", "list", "delete"):
        assert result["ops"][op]["ok"] > 0, op
    assert result["ops"]["get"]["bytes"] > 0
    assert result["prefix"].startswith("loadtest/")
    assert (result["tls"], result["token"]) == (False, False)
    assert result["server_log"]["exit_code"] == 0


def test_spawned_run_with_tls_and_a_token_is_clean(tmp_path: Path, pki: dict[str, Path]) -> None:
    out = tmp_path / "loadtest.json"
    proc = loadtest(
        "--spawn",
        f"--server-arg=--tls-cert={pki['cert']}",
        f"--server-arg=--tls-key={pki['key']}",
        "--tls-ca",
        str(pki["ca"]),
        "--token",
        "load-secret",
        "--duration",
        "2",
        *SHORT,
        "--json",
        str(out),
    )
    result = assert_clean(proc, out)
    assert result["ops"]["put"]["ok"] > 0
    assert result["ops"]["get"]["bytes"] > 0
    assert (result["tls"], result["token"]) == (True, True)
    assert "load-secret" not in out.read_text() + proc.stdout + proc.stderr
    # No traceback either: a TLS connection closed under the reset once logged one.
    assert result["server_log"] == {"problems": 0, "lines": [], "exit_code": 0}


def test_a_wrong_token_is_an_auth_error_not_a_crash(
    tmp_path: Path, valkey_server: EmbeddedValkey, pki: dict[str, Path]
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("right-token loadtest rw\n")
    server, port = start_process(
        valkey_server.url,
        "--tokens",
        str(tokens),
        "--tls-cert",
        str(pki["cert"]),
        "--tls-key",
        str(pki["key"]),
    )
    try:
        address = ["--server", f"127.0.0.1:{port}", "--tls-ca", str(pki["ca"]), "--count", "20"]
        wrong = loadtest(*address, *SHORT, token="wrong-token")
        assert wrong.returncode == 1, wrong.stdout + wrong.stderr
        assert f"loadtest: cannot use 127.0.0.1:{port}: unauthorized" in wrong.stderr
        assert "check VALISE_TOKEN (or --token)" in wrong.stderr
        assert "Traceback" not in wrong.stderr
        # The same server and options with the token it knows: a clean run.
        out = tmp_path / "loadtest.json"
        right = loadtest(*address, *SHORT, "--json", str(out), token="right-token")
        assert assert_clean(right, out)["total"]["ok"] == 20
    finally:
        server.send_signal(signal.SIGTERM)
        reap(server)
