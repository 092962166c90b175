"""Smoke test of ``python -m client.loadtest --spawn``: a short verified run, clean exit."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.support.harness import ROOT


def test_spawned_run_is_clean_and_leaves_nothing(tmp_path: Path) -> None:
    out = tmp_path / "loadtest.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "client.loadtest",
            "--spawn",
            "--duration",
            "3",
            "--clients",
            "4",
            "--sizes",
            "4KiB:3,300KiB:1",
            "--json",
            str(out),
            "--quiet",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(out.read_text())
    assert result["exit_code"] == 0
    assert result["corruptions"] == 0, result["corruption_details"]
    assert result["anomalies"] == 0, result["anomaly_details"]
    assert result["errors_by_code"] == {}, result["error_samples"]
    for op in ("put", "get", "stat", "list", "delete"):
        assert result["ops"][op]["ok"] > 0, op
    assert result["ops"]["get"]["bytes"] > 0
    assert result["prefix"].startswith("loadtest/")
    # Counted by a LIST of the prefix after the deletes, before the server stopped.
    assert result["cleanup"]["remaining"] == 0
    assert result["server_log"]["exit_code"] == 0
