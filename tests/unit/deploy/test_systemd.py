"""deploy/valise.service: the same text as docs/deployment.md shows, and valid for systemd."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import ROOT

UNIT = ROOT / "deploy" / "valise.service"
EXEC = "/opt/valise/bin/valise-server"
_FENCE = re.compile(r"^```ini\n(# Valise as a systemd service.*?)^```$", re.M | re.S)


def test_the_deployment_doc_shows_the_shipped_unit() -> None:
    doc = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
    shown = _FENCE.findall(doc)
    assert len(shown) == 1, "docs/deployment.md must show the unit once, in an ini fence"
    assert shown[0] == UNIT.read_text(encoding="utf-8")


def test_the_unit_keeps_scans_off_disk_and_the_server_unprivileged() -> None:
    settings = dict(
        line.split("=", 1)
        for line in UNIT.read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert settings["DynamicUser"] == "yes"
    assert settings["LimitCORE"] == "0"
    assert settings["ProtectSystem"] == "strict"
    assert settings["CapabilityBoundingSet"] == ""
    assert settings["KillMode"] == "mixed"  # SIGTERM to the server, not its valkey-server
    assert settings["ExecStart"].startswith(EXEC + " --config ")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: point it at a stand-in.
    program = tmp_path / "bin" / "valise-server"
    program.parent.mkdir()
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(0o755)
    unit = tmp_path / "valise.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace(EXEC, str(program)))
    proc = subprocess.run(
        ["systemd-analyze", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # An unknown or misspelt setting is only a warning on stderr: fail on it too.
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr
