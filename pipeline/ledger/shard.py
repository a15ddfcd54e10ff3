"""What the driver hands a worker: a shard descriptor, never data.

A ``Shard`` names one input file (or a group of image files) and the output file it becomes;
for a decode, the archive file comes with what the archive's manifest recorded of it
(``Listed``), so the worker can check the file before it trusts the contents. These are the
nouns every other part of the ledger talks about, so they sit below all of it:

    shard <- manifest <- completion <- integrity <- plan <- job
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from typing import NamedTuple

from pipeline.core import storage

Recorded = tuple[int, int, str]  # rows, bytes, sha256 of one committed output file
_PACKED = struct.Struct("<qq32s")


class Entry(NamedTuple):
    """What a job's manifest or progress table says of one committed file."""

    source: str
    recorded: Recorded
    identity: str  # the input's identity when it was read ("" for a decode's outputs)


MISSING = "listed in the archive's manifest but missing"


@dataclass(frozen=True, slots=True)
class Listed:
    """An archive file as its completion record or the manifest describes it (``sha256`` None:
    nothing describes it)."""

    uri: str
    name: str
    rows: int | None
    bytes: int | None
    sha256: str | None

    def unlisted(self) -> str | None:
        """Why no record covers the file, where none does (told without a request)."""
        if self.sha256 is None:
            return (
                "not listed in the archive's manifest or completion records, so no checksum "
                "covers it (a file of another job, or copied in by hand?)"
            )
        return None

    def problem(self, size: bool = True) -> str | None:
        """What is wrong with the file that can be told without reading it (``size=False``:
        only whether a record covers it and whether it is there)."""
        if self.sha256 is None:
            return self.unlisted()
        try:
            actual = storage.size(self.uri)
        except FileNotFoundError:
            return MISSING
        if size and actual != self.bytes:
            return (
                f"{actual:,} bytes, the archive's record says {self.bytes:,}: the file changed "
                "after it was written"
            )
        return None


@dataclass(frozen=True, slots=True)
class Shard:
    """One unit of work: an input file (or a group of image files) and the output file it becomes."""

    source: str  # URI of the input file
    relpath: str  # path relative to the input root: the key prefix and the output's stem
    name: str  # output file name inside the output folder
    members: tuple[str, ...] = ()  # image files of a group (then ``source`` is their folder)
    listed: Listed | None = None  # an archive file: what its manifest recorded of it
    # the input's "<bytes>:<version>" as listed at plan time (storage.identity; for a group of
    # images, their bytes and a hash of their identities): a record naming another is stale
    identity: str = ""

    @property
    def files(self) -> tuple[str, ...]:
        return self.members or (self.source,)

    def input_bytes(self) -> int:
        """From the listing (an archive file's: its record), not a request to the store."""
        if self.identity:
            return int(self.identity.split(":", 1)[0])
        if self.listed is not None and self.listed.bytes is not None:
            return self.listed.bytes
        return sum(storage.size(f) for f in self.files)


def group_identity(identities: list[str]) -> str:
    """One identity for a group of files: their bytes, and a hash of each file's identity."""
    digest = hashlib.sha256("\n".join(identities).encode()).hexdigest()[:32]
    return f"{sum(int(i.split(':', 1)[0]) for i in identities)}:{digest}"


class Committed(MutableMapping[str, Recorded]):
    """name -> ``Recorded`` of every file a job committed, as the driver holds them until the
    manifest is written: packed into 48 bytes a file (a tuple of two ints and a hex string
    took about 250), which is most of the driver's memory per shard at a million shards. A
    sha256 that is not 64 lowercase hex digits (a hand-edited record) is kept as it is."""

    def __init__(self) -> None:
        self._packed: dict[str, bytes | Recorded] = {}

    def __setitem__(self, name: str, recorded: Recorded) -> None:
        rows, size, sha = recorded
        try:
            digest = bytes.fromhex(sha)
        except ValueError:
            digest = b""
        if len(digest) == 32 and digest.hex() == sha:
            self._packed[name] = _PACKED.pack(rows, size, digest)
        else:
            self._packed[name] = (rows, size, sha)

    def __getitem__(self, name: str) -> Recorded:
        value = self._packed[name]
        if isinstance(value, bytes):
            rows, size, digest = _PACKED.unpack(value)
            return rows, size, digest.hex()
        return value

    def __contains__(self, name: object) -> bool:
        return name in self._packed

    def __delitem__(self, name: str) -> None:
        del self._packed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._packed)

    def __len__(self) -> int:
        return len(self._packed)
