"""Every name vaezip derives, in one place: a shard's output files and a sample's key.

A shard's output is named from its input's path relative to the input root, so a re-run, a
retry and a resume all land on the same name; every job writes ``<stem><suffix>``:

    input  data/x/a/b.npy (root data/x)    stem  a__b.npy
    encode                                 a__b.npy.vz.parquet
    decode (stem of the archive file)      a__b.npy.npy, a__b.npy.parquet, a__b.npy.tar, ...
    features                               a__b.npy.features.parquet

A sample's key is ``<relative path>:<row>`` unless the source gives its own ids.
"""

from __future__ import annotations

ARCHIVE_SUFFIX = ".vz.parquet"
FEATURES_SUFFIX = ".features.parquet"


def stem(relpath: str) -> str:
    """The flat name every output of one input file starts with."""
    return relpath.replace("/", "__")


def output_name(relpath: str, suffix: str = ARCHIVE_SUFFIX) -> str:
    """The file a job writes for the input at ``relpath`` (relative to the input root)."""
    return stem(relpath) + suffix


def archive_stem(archive_name: str) -> str:
    """``a__b.npy.vz.parquet`` -> ``a__b.npy``: what a decode of that file is named after."""
    if not archive_name.endswith(ARCHIVE_SUFFIX):
        raise ValueError(f"{archive_name!r} is not an archive file name (*{ARCHIVE_SUFFIX})")
    return archive_name[: -len(ARCHIVE_SUFFIX)]


def group_relpath(index: int) -> str:
    """The stand-in relative path of the ``index``-th group of loose image files."""
    return f"images-{index:05d}"


def sample_key(relpath: str, row: int) -> str:
    """A sample's key when its source has no id column: its file and row."""
    return f"{relpath}:{row}"
