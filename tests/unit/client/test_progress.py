"""Unit tests for client/progress.py: a status line that a Windows console shows as meant."""

from __future__ import annotations

import io

from client.progress import ProgressBar, StatusLine, human_bytes


def test_a_shorter_line_blanks_the_rest_of_the_longer_one_without_escape_codes() -> None:
    out = io.StringIO()
    line = StatusLine(out, columns=80)
    line.show("put 1/300  [####....]")
    line.show("put 2/300")
    line.clear()
    text = out.getvalue()
    assert "\x1b" not in text
    assert text == "\rput 1/300  [####....]\rput 2/300" + " " * 12 + "\r" + " " * 9 + "\r"


def test_a_line_never_fills_the_last_column() -> None:
    out = io.StringIO()
    StatusLine(out, columns=20).show("x" * 50)
    assert out.getvalue() == "\r" + "x" * 19


def test_progress_bar_draws_and_ends_its_line() -> None:
    out = io.StringIO()
    bar = ProgressBar("get k", enabled=True, stream=out, columns=200)
    bar(512, 1024)
    bar.finish()
    text = out.getvalue()
    assert text.startswith("\rget k  [")
    assert "50%" in text and "100%" not in text.split("\r")[1]
    assert "512 B/1.0 KiB" in text
    assert text.endswith("\n")
    assert "\x1b" not in text


def test_disabled_bar_writes_nothing() -> None:
    out = io.StringIO()
    bar = ProgressBar("put k", enabled=False, stream=out)
    bar(10, 20)
    bar.finish()
    assert out.getvalue() == ""


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(5 * 1024**3) == "5.0 GiB"


def test_a_resumed_upload_shows_the_server_offset_not_a_restart() -> None:
    bar = ProgressBar("put k", enabled=False, columns=200)
    bar(900 * 1024, 1024 * 1024)
    bar(768 * 1024, 1024 * 1024)  # RESUME: the server kept 768 KiB of the 900 sent
    text = bar.text(now=bar._start + 1.0)
    assert "75%" in text
    assert "768.0 KiB/1.0 MiB" in text
    assert "0.0 MB/s" in text  # no byte sent since the resume yet: no made-up rate
