"""PHI leaves no trace: no file on disk, no bytes or key names in logs.

A real server with its private valkey-server (persistence off) takes an
upload, a download, a failed upload and a delete of a recognisable scan under
a patient-named key; then both stop. Afterwards no new file in the places a
process could write (temp dirs, shared memory, home, the repo) holds the
bytes or the key name, none is an RDB or AOF file, and nothing the server
printed holds them either.

"No new file at all" is checked only where nothing but our processes can
write: the repo, and a HOME and TMPDIR made for this server alone. Other
programs on the machine may write to the shared /tmp or the real home
meanwhile; there only content that could come from us counts.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from protocol.frames import FrameType
from tests.support.harness import ROOT
from tests.support.wire import WireClient

KEY = "Patient Jane Roe 1961-02-03/brain-t1.nii"
MARK = b"JANE-ROE-PIXELS:"
SMALL = ["--valkey-maxmemory", "256MiB", "--chunk-size", "1MiB"]
SHARED = [Path("/tmp"), Path("/var/tmp"), Path("/dev/shm"), Path.home()]


def new_files(since: float, tops: list[Path], skip: Path | None = None) -> list[Path]:
    found = []
    for top in tops:
        for dirpath, dirnames, filenames in os.walk(top):
            here = Path(dirpath)
            if skip is not None and (here == skip or skip in here.parents):
                dirnames.clear()
                continue
            if ".git" in here.parts:
                dirnames.clear()
                continue
            for name in filenames:
                path = here / name
                try:
                    if path.is_symlink() or path.stat().st_mtime < since:
                        continue
                except OSError:
                    continue  # gone meanwhile
                if path.suffix == ".pyc":
                    continue  # Python's own bytecode cache: code, not data
                found.append(path)
    return found


def holds(path: Path, needles: list[bytes]) -> bool:
    try:
        data = path.read_bytes()
    except OSError:
        return False
    return any(n in data for n in needles)


@pytest.mark.asyncio
async def test_no_phi_on_disk_or_in_logs(tmp_path_factory: pytest.TempPathFactory) -> None:
    data = MARK + random.Random(3).randbytes(3 * 1024 * 1024) + MARK
    since = time.time() - 1
    # The server's (and its valkey-server's) own HOME and TMPDIR.
    home, tmp = tmp_path_factory.mktemp("home"), tmp_path_factory.mktemp("tmp")
    proc = subprocess.Popen(  # noqa: ASYNC220 - one process, read by communicate()
        [sys.executable, "server.py", "--port", "0", "--log-level", "debug", *SMALL],
        cwd=ROOT,
        env={**os.environ, "HOME": str(home), "TMPDIR": str(tmp)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    port = int(line.rsplit(":", 1)[1])
    client = await WireClient.connect("127.0.0.1", port)
    assert (await client.put(KEY, data)).ok
    assert (await client.get(KEY)).data == data
    bad = await client.put(KEY + ".bad", data, digest=hashlib.sha1(b"other").digest())
    assert bad.code == "checksum_mismatch"
    assert (await client.request(FrameType.DELETE, {"key": KEY})).body == {"deleted": True}
    await client.close()
    proc.send_signal(signal.SIGTERM)
    out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 0
    printed = out + err
    assert printed, "the server logged something to check"
    for needle in (MARK, KEY.encode(), b"Jane Roe"):
        assert needle not in printed, needle
    # pytest's own temporary directories are the test's, not the server's.
    shared = new_files(since, SHARED, skip=tmp_path_factory.getbasetemp().parent)
    ours = new_files(since, [home, tmp, ROOT])
    created = shared + ours
    assert not [p for p in created if p.name in ("dump.rdb", "appendonly.aof")]
    assert not [p for p in created if holds(p, [MARK, KEY.encode()])]
    assert ours == [], f"files written during the run: {ours}"
