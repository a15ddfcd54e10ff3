"""Every name vaezip derives, in one place: a shard's output files and a sample's key.

A shard's output is named from its input's path relative to the input root, without the input's
own extension, so a re-run, a retry and a resume all land on the same name and no name carries
two extensions:

    input   data/x/a/b.npy (root data/x)     stem  a__b
    encode                                   a__b.vz.parquet
    decode  (stem of the archive file)       a__b.npy, a__b.parquet, a__b.tar, a__b.index.parquet
    features                                 a__b.features.parquet

With ``--fan-out N`` an archive file lies in one of N sub-folders picked by a hash of its name
(``0417/a__b.vz.parquet``), so no folder holds millions of files; its completion record lies
under ``_done/`` in the same sub-folder, and the manifest lists it by that relative path. The
file's own name is unchanged, so names stay as injective as they were.

Names stay injective: two inputs whose stems are equal (``a.npy`` and ``a.npz``, or ``a/b.npy``
and ``a__b.npy``) are refused by the plan before anything is written. Archives written before
names dropped the extension (``a__b.npy.vz.parquet``) decode to the same names.

A sample's key is ``<relative path without extension>:<row>`` (``a/b:17``) unless the source
gives its own ids (a WebDataset key, ``--key-column``); an image file's is its relative path
without the extension (``cats/001.jpg`` -> ``cats/001``; the ``path`` column keeps the file's
name), as WebDataset names a sample.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Iterable

ARCHIVE_SUFFIX = ".vz.parquet"
FEATURES_SUFFIX = ".features.parquet"
# Bumped when the names derived from an input change; job.json records it, so an archive
# folder written under other names is never resumed under these.
NAMES_VERSION = 3  # 3: an image file's key is its path without the extension
# Extensions of the files vaezip reads (pipeline.data.readers), dropped from names and keys.
DATA_SUFFIXES = (
    ".npy",
    ".npz",
    ".parquet",
    ".pq",
    ".arrow",
    ".tar",
    *(".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
)


def drop_data_suffix(relpath: str) -> str:
    """``a/b.npy`` -> ``a/b``; a name without a data file's extension is kept whole."""
    base, ext = posixpath.splitext(relpath)
    return base if ext.lower() in DATA_SUFFIXES and posixpath.basename(base) else relpath


def stem(relpath: str) -> str:
    """The flat name every output of one input file starts with."""
    return drop_data_suffix(relpath).replace("/", "__")


def output_name(relpath: str, suffix: str = ARCHIVE_SUFFIX) -> str:
    """The file a job writes for the input at ``relpath`` (relative to the input root)."""
    return stem(relpath) + suffix


def fanned(name: str, fan_out: int) -> str:
    """``name`` inside its sub-folder of ``fan_out`` (``0`` or ``1``: the name itself)."""
    if fan_out <= 1:
        return name
    folder = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big") % fan_out
    return f"{folder:0{len(str(fan_out - 1))}d}/{name}"


def archive_stem(archive_name: str) -> str:
    """``a__b.vz.parquet`` -> ``a__b``: what a decode of that file is named after (an older
    archive's ``a__b.npy.vz.parquet`` too)."""
    if not archive_name.endswith(ARCHIVE_SUFFIX):
        raise ValueError(f"{archive_name!r} is not an archive file name (*{ARCHIVE_SUFFIX})")
    return drop_data_suffix(archive_name[: -len(ARCHIVE_SUFFIX)])


def group_relpath(index: int) -> str:
    """The stand-in relative path of the ``index``-th group of loose image files."""
    return f"images-{index:05d}"


def sample_key(relpath: str, row: int) -> str:
    """A sample's key when its source has no id column: its file (no extension) and row."""
    return f"{drop_data_suffix(relpath)}:{row}"


def sample_keys(relpath: str, rows: Iterable[int]) -> list[str]:
    """``sample_key`` of each row, the file's part worked out once."""
    name = drop_data_suffix(relpath)
    return [f"{name}:{row}" for row in rows]


def legacy_sample_key(relpath: str, row: int) -> str:
    """The key archives written before keys dropped the extension gave the same row."""
    return f"{relpath}:{row}"
