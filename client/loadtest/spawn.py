"""``--spawn``: a fresh local ``server.py``, its address, and its log's warnings.

The server prints ``valise listening on HOST:PORT`` on stdout once it
accepts connections; its stderr is scanned for WARNING/ERROR records so the
report can show what the server complained about during the run.

With ``--token`` the server is started requiring it: a tokens file of one
line, the token's SHA-256 (never the token itself), in a private folder
removed when the server stops. TLS needs the server's certificate, which
only the user has: ``--server-arg=--tls-cert=FILE --server-arg=--tls-key=FILE``.
"""

from __future__ import annotations

import collections
import hashlib
import os
import queue
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from ..cli import parse_server
from .settings import UsageError

#: What every server prints once it listens: ``valise listening on HOST:PORT``,
#: maybe followed by more words (`` (N workers)``, `` http on HOST:PORT``).
#: The one parser of that line: the tests and tools use it too.
START_LINE = "valise listening on "


def start_address(line: str | bytes) -> tuple[str, int] | None:
    """(host, port) from the server's start line; None if ``line`` is not one."""
    text = line.decode(errors="replace") if isinstance(line, bytes) else line
    if not text.startswith(START_LINE):
        return None
    return parse_server(text[len(START_LINE) :].split()[0])


class SpawnError(Exception):
    """The server started by --spawn did not come up (exit 1)."""


#: The namespace the spawned server grants --token (read and write).
NAMESPACE = "loadtest"


def _has_flag(args: Sequence[str], flag: str) -> bool:
    return any(a == flag or a.startswith(flag + "=") for a in args)


def tls_mismatch(server_args: Sequence[str], client_tls: bool) -> str | None:
    """Why a spawned server and the load test would not agree on TLS, or None."""
    serves_tls = _has_flag(server_args, "--tls-cert")
    if client_tls and not serves_tls:
        return (
            "--spawn with TLS: give the server its certificate too: "
            "--server-arg=--tls-cert=FILE --server-arg=--tls-key=FILE"
        )
    if serves_tls and not client_tls:
        return "the spawned server listens with TLS: add --tls (and --tls-ca FILE for a private CA)"
    return None


_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL)\b")
_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d[ T]")


class SpawnedServer:
    """``python server.py --port 0`` from the repository root, with its private Valkey."""

    def __init__(self, extra_args: Sequence[str], token: str | None = None) -> None:
        self.root = Path(__file__).resolve().parents[2]
        self.args = [sys.executable, "server.py", "--port", "0", *extra_args]
        #: The folder of the tokens file made for ``token``, removed by :meth:`stop`.
        self.private: Path | None = None
        if token is not None and not _has_flag(extra_args, "--tokens"):
            self.private = Path(tempfile.mkdtemp(prefix="valise-loadtest-"))
            tokens = self.private / "tokens"
            digest = hashlib.sha256(token.encode()).hexdigest()
            tokens.write_text(f"sha256:{digest} {NAMESPACE} rw\n", encoding="utf-8")
            os.chmod(tokens, 0o600)
            self.args += ["--tokens", str(tokens)]
        self.proc: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._tail: collections.deque[str] = collections.deque(maxlen=30)
        self.problems: list[str] = []
        self.problem_count = 0
        self._in_problem = False
        self._threads: list[threading.Thread] = []

    def start(self, timeout: float = 60.0) -> tuple[str, int]:
        if not (self.root / "server.py").is_file():
            raise UsageError(f"--spawn: no server.py in {self.root}")

        self.proc = subprocess.Popen(
            self.args,
            cwd=self.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # our Ctrl-C is ours to handle: we stop it last
        )
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        for stream, sink in ((self.proc.stdout, self._stdout), (self.proc.stderr, self._stderr)):
            thread = threading.Thread(target=self._drain, args=(stream, sink), daemon=True)
            thread.start()
            self._threads.append(thread)
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                line = None
            if line is None:
                self.stop()
                tail = "\n".join(self._tail)
                code = self.proc.returncode
                raise SpawnError(f"the spawned server did not start (exit {code}):\n{tail}")
            address = start_address(line)
            if address is not None:
                host, port = address
                return ("127.0.0.1" if host in ("0.0.0.0", "") else host, port)

    @staticmethod
    def _drain(stream: IO[str], sink: Any) -> None:
        for line in stream:
            sink(line.rstrip("\n"))
        sink(None)

    def _stdout(self, line: str | None) -> None:
        self._lines.put(line)

    def _stderr(self, line: str | None) -> None:
        if line is None:
            return
        self._tail.append(line)
        if _LOG_LINE.match(line):
            self._in_problem = bool(_PROBLEM.search(line))
            if self._in_problem:
                self.problem_count += 1
        elif line.startswith("Traceback") and not self._in_problem:
            self._in_problem = True  # an uncaught exception, outside logging
            self.problem_count += 1
        elif not self._in_problem:
            return  # continuation of an INFO record
        if self._in_problem and len(self.problems) < 200:
            self.problems.append(line)  # a WARNING/ERROR record with its traceback

    def stop(self, timeout: float = 40.0) -> int | None:
        """SIGTERM, wait (the server finishes transfers within its grace), then SIGKILL."""
        proc = self.proc
        if proc is None:
            self._forget_tokens()
            return None
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self._threads:
            thread.join(timeout=2)
        self._forget_tokens()
        return proc.returncode

    def _forget_tokens(self) -> None:
        if self.private is not None:
            shutil.rmtree(self.private, ignore_errors=True)
            self.private = None

    def log(self) -> dict[str, Any]:
        code = self.proc.returncode if self.proc is not None else None
        return {"problems": self.problem_count, "lines": self.problems, "exit_code": code}
