"""Build ``valise.pyz``: the whole client in one file to copy onto a scanner console.

``python -m client.pyz dist/valise.pyz`` (``make client-pyz``), or, from an
installed wheel, ``python -m valise.pyz valise.pyz``. The result is a zipapp
(PEP 441): a ``#!/usr/bin/env python3`` line, then a zip holding this
package as ``valise/`` and a ``__main__.py`` that checks the Python version
before it imports anything. Run it as ``python valise.pyz put ...`` with any
Python from 3.8 on, on any platform; nothing is installed or unpacked, and
it needs nothing beyond the standard library.

The archive is reproducible: entries sorted, fixed timestamps and modes, so
the same sources give the same bytes (and the same SHA-256 to publish).
"""

from __future__ import annotations

import argparse
import os
import sys
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["MAIN", "build", "main", "sources"]

#: The archive's entry point: Python 3.6-parsable, so older Pythons read the one line.
MAIN = '''\
"""valise.pyz: the Valise client in one file. ``python valise.pyz --help``."""
import sys

if sys.version_info < (3, 8):
    sys.exit(
        "valise client needs Python 3.8 or newer (this is Python %s)" % sys.version.split()[0]
    )

from valise.cli import main

sys.exit(main())
'''

SHEBANG = b"#!/usr/bin/env python3\n"
#: Zip's earliest date: no build time in the archive.
_EPOCH = (1980, 1, 1, 0, 0, 0)
#: This builder stays out of the archive: a console only runs the client.
_LEFT_OUT = {"pyz.py"}


def sources(package: Path) -> Iterator[tuple[str, Path]]:
    """``(name in the archive, file)`` for every module of the package, sorted."""
    found = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package)
        if "__pycache__" in rel.parts or (len(rel.parts) == 1 and rel.name in _LEFT_OUT):
            continue
        found.append(("valise/" + rel.as_posix(), path))
    return iter(sorted(found))


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    return info


def build(target: str | os.PathLike[str], package: Path | None = None) -> Path:
    """Write the archive to ``target`` (its folder is created); returns its path.

    Written to ``target + ".new"`` first and renamed, so a failed build never
    leaves a half archive where a working one was.
    """
    package = package if package is not None else Path(__file__).resolve().parent
    out = Path(target)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".new")
    try:
        with open(tmp, "wb") as fh:
            fh.write(SHEBANG)
            with zipfile.ZipFile(fh, "w") as archive:
                archive.writestr(_entry("__main__.py"), MAIN)
                for name, path in sources(package):
                    archive.writestr(_entry(name), path.read_bytes())
        os.chmod(tmp, 0o755)  # ./valise.pyz where a shebang counts; harmless elsewhere
        os.replace(tmp, out)
    except BaseException:
        if tmp.exists():
            tmp.unlink()
        raise
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m client.pyz", description="Build valise.pyz, the client in one file."
    )
    parser.add_argument("target", nargs="?", default="dist/valise.pyz")
    args = parser.parse_args(argv)
    out = build(args.target)
    print(f"{out}  {out.stat().st_size} bytes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
