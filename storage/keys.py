"""Where Valise keeps things in Valkey (docs/decisions/0001-valkey-key-layout.md).

Per namespace, under one hash tag so the commit is one atomic step in one slot:

- ``valise:{ns=NS}:m:KEY``  hash: ``info`` (file info JSON), ``vid``, ``prev``
- ``valise:{ns=NS}:ix``     sorted set, all scores 0: keys in byte order for LIST
- ``valise:{ns=NS}:ex``     sorted set: key -> expiry (ms), to prune ``ix``
- ``valise:{ns=NS}:u:ID``   hash: the state of resumable upload ID (section 6.1)
- ``valise:{ns=NS}:ud:ID``  its recorded chunks' checksums, raw, 16 bytes each (xxh3-128;
  20, SHA-1, for an upload an older server began: storage/hashing.py)
  (each sealed alone with encryption on: storage/upload_seals.py)
- ``valise:{ns=NS}:ux``     sorted set: open resumable upload ids -> deadline (ms)
- ``valise:{ns=NS}:ev``     stream: the namespace's change events, oldest first
  (docs/decisions/0011-change-events.md)

Per stored version (a random ``vid``), with no hash tag, so the chunks of one
file spread over a cluster's shards:

- ``valise:c:VID:I``  chunk I, exactly those file bytes (sealed: storage/crypto.py)
- ``valise:s:VID``    the chunks' checksums, as ``ud:`` has them, in order (sealed whole)
- ``valise:p:VID:T``  a resumable upload's partial last chunk, written by attachment T

The file key follows a fixed prefix and Valkey keys are binary-safe, so two
different file keys never share a storage key whatever characters they hold.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PREFIX = "valise"


def _escape_namespace(namespace: str) -> str:
    # Injective, and never lets the namespace close the hash tag early.
    return namespace.replace("%", "%25").replace("{", "%7B").replace("}", "%7D")


def _unescape_namespace(escaped: str) -> str:
    return escaped.replace("%7D", "}").replace("%7B", "{").replace("%25", "%")


#: SCAN pattern matching every namespace's LIST index.
INDEX_PATTERN = f"{PREFIX}:{{ns=*}}:ix"


def namespace_of_index(name: bytes) -> str:
    """The namespace whose LIST index is ``name`` (a key matched by INDEX_PATTERN)."""
    return _unescape_namespace(name.decode()[len(PREFIX) + 5 : -4])


@dataclass(frozen=True, slots=True)
class NamespaceKeys:
    namespace: str
    #: ``valise:{ns=<escaped namespace>}``, the hash tag of every name below:
    #: escaped once, not at each name (a small PUT+GET asks for six).
    tag: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tag", f"{PREFIX}:{{ns={_escape_namespace(self.namespace)}}}")

    @property
    def meta_prefix(self) -> bytes:
        return f"{self.tag}:m:".encode()

    def meta(self, key: str) -> bytes:
        return self.meta_prefix + key.encode()

    @property
    def index(self) -> str:
        return f"{self.tag}:ix"

    @property
    def expiry_index(self) -> str:
        return f"{self.tag}:ex"

    def upload(self, upload_id: str) -> bytes:
        """A resumable upload's state (docs/decisions/0010-resumable-uploads.md)."""
        return f"{self.tag}:u:".encode() + upload_id.encode()

    def upload_digests(self, upload_id: str) -> bytes:
        return f"{self.tag}:ud:".encode() + upload_id.encode()

    @property
    def uploads(self) -> str:
        """Open resumable uploads -> deadline (ms): counted against --max-resumable."""
        return f"{self.tag}:ux"

    @property
    def events(self) -> str:
        return f"{self.tag}:ev"


CHUNK_PREFIX = f"{PREFIX}:c:"
DIGESTS_PREFIX = f"{PREFIX}:s:"
PARTIAL_PREFIX = f"{PREFIX}:p:"


def chunk_key(vid: str, index: int) -> str:
    return f"{CHUNK_PREFIX}{vid}:{index}"


def chunk_keys(vid: str, count: int) -> list[str]:
    """The names of a version's first ``count`` chunks, in order."""
    return [f"{CHUNK_PREFIX}{vid}:{index}" for index in range(count)]


def digests_key(vid: str) -> str:
    return DIGESTS_PREFIX + vid


def partial_key(vid: str, token: str) -> str:
    """The partial last chunk of a resumable upload, as attachment ``token`` left it."""
    return f"{PARTIAL_PREFIX}{vid}:{token}"
