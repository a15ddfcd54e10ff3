"""The deterministic shard plan and the job's fingerprint.

One input file is one shard, named from its path relative to the input root
(``pipeline.core.names``), so a re-run, a retry and a resume all land on the same name:

    data/photos/train/train-00003.parquet  ->  train-00003.vz.parquet
    data/x/a/b.npy (root data/x)           ->  a__b.vz.parquet

Image files are the exception: sorted by path, they are grouped ``images_per_shard`` at a
time into shards ``images-00000.vz.parquet``, ``images-00001.vz.parquet``, ...

Decode plans the other way round: one archive file is one shard, and its output is named
after the archive file's stem (``plan_archive``).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from dataclasses import replace

from pipeline.core import storage
from pipeline.core.errors import ConfigError
from pipeline.core.names import (
    ARCHIVE_SUFFIX,
    archive_stem,
    drop_data_suffix,
    fanned,
    group_relpath,
    output_name,
)
from pipeline.data.readers import format_of, list_identified
from pipeline.ledger.integrity import listed_files
from pipeline.ledger.shard import Shard, group_identity


def _root(uri: str, listed: list[tuple[str, str]]) -> str:
    """The folder keys and output names are relative to: the input folder itself, else the
    folder of the input file, else (a glob) the deepest folder holding every match."""
    if storage.is_glob(uri):
        return posixpath.commonpath([posixpath.dirname(f.split("://", 1)[-1]) for f, _ in listed])
    if storage.is_dir(uri):
        return storage.filesystem(uri)[1].rstrip("/")
    return posixpath.dirname(listed[0][0].split("://", 1)[-1])  # one file, named


def plan_shards(
    input_uri: str, images_per_shard: int = 1000, suffix: str = ARCHIVE_SUFFIX, fan_out: int = 0
) -> list[Shard]:
    """The input's shards, each named ``<stem><suffix>`` (an archive file by default); with
    ``fan_out`` above 1, inside one of that many sub-folders (``names.fanned``)."""
    if images_per_shard < 1:
        raise ConfigError(f"images_per_shard must be positive, got {images_per_shard}")
    if fan_out < 0:
        raise ConfigError(f"--fan-out must be 0 (no sub-folders) or more, got {fan_out}")
    shards = _plan(input_uri, images_per_shard, suffix)
    if fan_out > 1:  # names checked flat above, so the sub-folder keeps them injective
        shards = [replace(s, name=fanned(s.name, fan_out)) for s in shards]
    return shards


def _plan(input_uri: str, images_per_shard: int, suffix: str) -> list[Shard]:
    listed = list_identified(input_uri)  # (file, identity), sorted: nothing else per file held
    root = _root(input_uri, listed)
    if format_of(listed[0][0]) == "images":
        files = [f for f, _ in listed]
        proto = files[0].split("://", 1)[0] + "://" if "://" in files[0] else ""
        _refuse_shared_keys(files, root)
        return [
            Shard(
                source=proto + root,
                relpath=group_relpath(i // images_per_shard),
                name=output_name(group_relpath(i // images_per_shard), suffix),
                members=tuple(files[i : i + images_per_shard]),
                identity=group_identity([ident for _, ident in listed[i : i + images_per_shard]]),
            )
            for i in range(0, len(files), images_per_shard)
        ]
    prefix = root + "/"
    shards = []
    for f, ident in listed:
        path = f.split("://", 1)[-1] if "://" in f else f
        rel = path[len(prefix) :] if path.startswith(prefix) else posixpath.relpath(path, root)
        shards.append(Shard(source=f, relpath=rel, name=output_name(rel, suffix), identity=ident))
    del listed
    return _refuse_collisions(shards)


def _refuse_shared_keys(files: list[str], root: str) -> None:
    """An image file's key is its path without the extension (``cats/001``): two files that
    differ only there (``x.jpg``, ``x.png``) are refused, naming both, before anything runs."""
    seen: dict[str, str] = {}
    for f in files:
        key = drop_data_suffix(posixpath.relpath(f.split("://", 1)[-1], root))
        if key in seen:
            raise ConfigError(f"{seen[key]} and {f} would both have the key {key!r}; rename one of them")
        seen[key] = f


def _refuse_collisions(shards: list[Shard]) -> list[Shard]:
    """Output names must be injective: two inputs never share one output file, and two archive
    files never decode to one name (``x.npy`` and ``x.npy.npy`` give ``x.vz.parquet`` and
    ``x.npy.vz.parquet``, which older archives' names make both decode to ``x``). Held per
    shard: an index under the shard's own name; a decoded name only where it is not the
    archive name less its suffix (those are unique when the names are)."""
    seen: dict[str, int] = {}
    odd: list[int] = []
    for i, s in enumerate(shards):
        if (j := seen.get(s.name)) is not None:
            raise ConfigError(
                f"{shards[j].source} and {s.source} would both be written to {s.name}; "
                "rename one of them (or encode them as separate inputs)"
            )
        seen[s.name] = i
        if s.name.endswith(ARCHIVE_SUFFIX) and archive_stem(s.name) != s.name[: -len(ARCHIVE_SUFFIX)]:
            odd.append(i)
    decoded: dict[str, int] = {}
    for i in odd:
        back = archive_stem(shards[i].name)
        plain = seen.get(back + ARCHIVE_SUFFIX)  # the name that may decode to ``back`` as it is
        same = [
            j
            for j in (plain, decoded.get(back))
            if j is not None and j != i and archive_stem(shards[j].name) == back
        ]
        if same:
            first, second = sorted((i, min(same)))
            a, b = shards[first], shards[second]
            raise ConfigError(
                f"{a.source} and {b.source} would be archived as {a.name} and {b.name}, which both "
                f"decode to {back}.*; rename one of them"
            )
        decoded[back] = i
    return shards


def check_separate(input_uri: str, output_uri: str) -> None:
    """Refuse an output folder inside the input (or the input itself): a re-run would read its
    own outputs as input, or a decode would overwrite the archive's own manifest."""
    if storage.within(output_uri, input_uri):
        raise ConfigError(
            f"--output {output_uri} lies inside --input {input_uri}; write to a folder outside the input"
        )


def plan_archive(uri: str, suffix: str) -> list[Shard]:
    """An archive's files as shards whose outputs are named ``<archive stem><suffix>``, each
    carrying what the archive's manifest recorded of it, for the worker to check."""
    shards = []
    for f in listed_files(uri):
        rel = archive_stem(posixpath.basename(f.name))  # a fanned-out file's name is unique alone
        shards.append(Shard(source=f.uri, relpath=rel, name=output_name(rel, suffix), listed=f))
    return _refuse_collisions(shards)


def fingerprint(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
