"""The storage boundary: the only package that imports valkey.

Everything the server side needs of Valkey is named here; the modules behind
it are private to the package: :mod:`storage.clients` (valkey-py clients and
the one patch of its internals), :mod:`storage.lane` (Lua scripts on one
node without the pool's checkout cost), :mod:`storage.calls` (retries, error
translation), :mod:`storage.checks` (start-up refusals), :mod:`storage.store`
(the metadata and chunk operations), :mod:`storage.writer` and
:mod:`storage.reader` (the chunk writer and reader), :mod:`storage.resumable`
and :mod:`storage.uploads` (resumable uploads), :mod:`storage.crypto`
and :mod:`storage.keyfile` (encryption at rest), :mod:`storage.embedded`
(a private valkey-server). Every valkey-py exception leaves as a
:class:`StorageError` carrying its wire code.
"""

from storage.config import StorageConfig
from storage.embedded import EmbeddedValkey, die_with_parent
from storage.errors import (
    BadRange,
    ChecksumMismatch,
    Corrupt,
    FileNotFound,
    MisconfiguredValkey,
    StorageError,
    StorageFull,
    StorageUnavailable,
    Superseded,
    TooManyUploads,
)
from storage.info import FileInfo
from storage.keyfile import KeyFileError
from storage.keyfile import load as load_keys
from storage.reader import Download, open_download
from storage.resumable import ResumableWriter
from storage.store import Store
from storage.writer import ChunkWriter

__all__ = [
    "BadRange",
    "ChecksumMismatch",
    "ChunkWriter",
    "Corrupt",
    "Download",
    "EmbeddedValkey",
    "FileInfo",
    "FileNotFound",
    "KeyFileError",
    "MisconfiguredValkey",
    "ResumableWriter",
    "StorageConfig",
    "StorageError",
    "StorageFull",
    "StorageUnavailable",
    "Store",
    "Superseded",
    "TooManyUploads",
    "die_with_parent",
    "load_keys",
    "open_download",
]
