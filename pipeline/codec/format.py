"""The archive's one Parquet schema (version 2), specified in docs/FORMAT.md.

    vz_key           string          stable sample key: "<source path>:<row>" or the source's id
    vz_codes         binary          the row's quantized codes: raw bytes in a zstd-compressed
                                     column chunk, or (framing "row", and all of version 1) a
                                     zstd frame per row
    vz_crc32         uint32          CRC-32 of the uncompressed code bytes
    vz_shape         list<int32>     the source sample's shape
    vz_dtype         string          the source sample's dtype
    vz_latent_shape  list<int32>     latent shape before dropping channels: (C,) or (C, h, w)
    <passthrough>    as in the source (labels, captions, ids, ...)

File metadata key ``vaezip`` holds JSON: format version, model fingerprint and config,
quantizer and codec parameters, source URI and job fingerprint. Readers check the version
before anything else and treat every field as untrusted. Version 1 files (per-row frames only)
are still read.

This module owns both halves of the file: ``ArchiveWriter`` takes ``CodeRows`` (the typed
``vz_`` columns) and passthrough columns; ``iter_stored`` gives them back, batch by batch, with
every Parquet page checksum verified. Turning latents into codes and back is
``pipeline.codec.compress``; turning codes into samples is ``pipeline.data.archive``.
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.codec.codec import CodecParams
from pipeline.codec.ctxcoder import declared_channels
from pipeline.codec.quantize import QuantizerParams
from pipeline.core import storage
from pipeline.core.errors import ConfigError, InputError
from pipeline.core.names import ARCHIVE_SUFFIX
from pipeline.core.value_range import ValueRange

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
META_KEY = b"vaezip"
HF_KEY = b"huggingface"  # Hugging Face ``datasets`` features of the passthrough columns
META_SHA256_KEY = b"vaezip.sha256"  # sha256 (hex) of the META_KEY value: the footer's own checksum
PREFIX = "vz_"
BASE_FIELDS = [
    pa.field("vz_key", pa.string(), nullable=False),
    pa.field("vz_codes", pa.binary(), nullable=False),
    pa.field("vz_crc32", pa.uint32(), nullable=False),
    pa.field("vz_shape", pa.list_(pa.int32()), nullable=False),
    pa.field("vz_dtype", pa.string(), nullable=False),
    pa.field("vz_latent_shape", pa.list_(pa.int32()), nullable=False),
]
BASE_NAMES = [f.name for f in BASE_FIELDS]


@dataclass(frozen=True)
class CodeRows:
    """Rows as the archive stores them: the ``vz_`` columns, in row order. Read back from a
    file, every field is untrusted until ``pipeline.codec.compress`` and ``pipeline.data.archive``
    check it."""

    keys: list[str]
    codes: list[bytes]  # payloads: raw code bytes, or zstd frames (framing "row")
    crc32: list[int]  # of the uncompressed code bytes
    shapes: list[list[int]]  # the source samples' shapes
    dtypes: list[str]  # the source samples' dtypes
    latent_shapes: list[list[int]]  # (C,) or (C, h, w), before dropping channels

    def __len__(self) -> int:
        return len(self.keys)

    def columns(self) -> dict[str, list]:
        return {
            "vz_key": self.keys,
            "vz_codes": self.codes,
            "vz_crc32": self.crc32,
            "vz_shape": self.shapes,
            "vz_dtype": self.dtypes,
            "vz_latent_shape": self.latent_shapes,
        }

    @classmethod
    def from_columns(cls, cols: dict[str, list]) -> CodeRows:
        return cls(
            keys=cols["vz_key"],
            codes=cols["vz_codes"],
            crc32=cols["vz_crc32"],
            shapes=cols["vz_shape"],
            dtypes=cols["vz_dtype"],
            latent_shapes=cols["vz_latent_shape"],
        )


@dataclass(frozen=True)
class ArchiveMeta:
    model_fingerprint: str
    model_config: dict[str, Any]
    quantizer: QuantizerParams
    codec: CodecParams
    source_uri: str
    job_fingerprint: str
    format_version: int = FORMAT_VERSION
    value_range: ValueRange | None = None  # the data units [0, 1] stood for (None: defaults)
    tile: int | None = None  # images stored as tiles of this many pixels a side (pipeline.data.tiles)
    tile_margin: int = 0  # pixels of context around each tile its latents were encoded with

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": self.format_version,
                "model": {"fingerprint": self.model_fingerprint, "config": self.model_config},
                "quantizer": self.quantizer.to_dict(),
                "codec": self.codec.to_dict(),
                "source_uri": self.source_uri,
                "job_fingerprint": self.job_fingerprint,
                **({"value_range": self.value_range.to_list()} if self.value_range else {}),
                **({"tile": self.tile} if self.tile else {}),
                **({"tile_margin": self.tile_margin} if self.tile_margin else {}),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: bytes | str, uri: str) -> ArchiveMeta:
        try:
            data = json.loads(text)
            version = data.get("format_version") if isinstance(data, dict) else None
        except (ValueError, UnicodeDecodeError) as err:
            raise InputError(uri, f"archive metadata is not valid JSON ({err})") from err
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise InputError(
                uri,
                f"unknown archive format version {version!r}; this vaezip reads versions {READABLE_VERSIONS}",
            )
        try:
            meta = cls(
                format_version=version,
                model_fingerprint=str(data["model"]["fingerprint"]),
                model_config=dict(data["model"]["config"]),
                quantizer=QuantizerParams.from_dict(data["quantizer"]),
                codec=CodecParams.from_dict(data["codec"]),
                source_uri=str(data["source_uri"]),
                job_fingerprint=str(data["job_fingerprint"]),
                value_range=ValueRange.of(data.get("value_range")),
                tile=int(data["tile"]) if data.get("tile") is not None else None,
                tile_margin=int(data.get("tile_margin") or 0),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise InputError(uri, f"bad archive metadata: {err}") from err
        if version == 1 and (meta.codec.framing != "row" or meta.codec.name != "zstd"):
            raise InputError(uri, "bad archive metadata: format version 1 has per-row frames only")
        if meta.codec.name == "rans":
            channels = declared_channels(meta.codec.model)  # the header only: no tables built yet
            if channels != sum(meta.quantizer.active):
                raise InputError(
                    uri,
                    f"bad archive metadata: a context model of {channels} channels for "
                    f"{sum(meta.quantizer.active)} stored channels",
                )
        centers, q = meta.codec.centers, meta.quantizer
        top = int(np.iinfo(q.dtype).max)
        if centers and (len(centers) != sum(q.active) or not all(0 <= v <= top for v in centers)):
            raise InputError(
                uri,
                f"bad archive metadata: {len(centers)} fold centers for {sum(q.active)} stored "
                f"channels, or one outside 0..{top}",
            )
        return meta


@dataclass(frozen=True)
class Footer:
    meta: ArchiveMeta
    rows: int
    features: dict[str, Any]  # Hugging Face features of the passthrough columns ({}: none)


def _open(uri: str, data: bytes | None) -> IO[bytes]:
    """The archive file, or its bytes already read (and checked) by the caller."""
    return io.BytesIO(data) if data is not None else storage.open_read(uri)


def read_footer(uri: str, data: bytes | None = None) -> Footer:
    """An archive file's metadata (checked, version first), row count and passthrough
    features: one footer read (of ``data``, the file's bytes, where the caller has them)."""
    try:
        with _open(uri, data) as f:
            footer = pq.ParquetFile(f).metadata
            schema = footer.schema.to_arrow_schema()
    except FileNotFoundError as err:
        raise InputError(uri, "archive file not found") from err
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(uri, f"not a readable Parquet archive ({err})") from err
    raw = (schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise InputError(uri, "not a vaezip archive (no 'vaezip' metadata)")
    meta = ArchiveMeta.from_json(raw, uri)
    digest = (schema.metadata or {}).get(META_SHA256_KEY)
    # Files written before the footer carried its own checksum are covered by the file's sha256
    # in the manifest, which decode checks.
    if digest is not None and digest.decode(errors="replace") != hashlib.sha256(raw).hexdigest():
        raise InputError(uri, "archive metadata does not match its checksum: the footer was changed")
    return Footer(meta, footer.num_rows, hf_features(schema))


def read_meta_and_rows(uri: str) -> tuple[ArchiveMeta, int]:
    """An archive file's metadata (checked, version first) and its row count: one footer read."""
    footer = read_footer(uri)
    return footer.meta, footer.rows


def hf_metadata(features: dict[str, Any]) -> bytes:
    """Schema metadata that ``datasets`` reads its features from (``Features.from_arrow_schema``
    takes each column's feature where it matches the column's Arrow type)."""
    return json.dumps({"info": {"features": features}}, sort_keys=True).encode()


def hf_features(schema: pa.Schema) -> dict[str, Any]:
    """The Hugging Face ``datasets`` features a schema's metadata records, by column ({} when
    there are none, or another tool's metadata cannot be read: the Arrow types still tell)."""
    raw = (schema.metadata or {}).get(HF_KEY)
    try:
        features = json.loads(raw)["info"]["features"] if raw else None
    except (ValueError, KeyError, TypeError):
        return {}
    return features if isinstance(features, dict) else {}


def read_meta(uri: str) -> ArchiveMeta:
    return read_meta_and_rows(uri)[0]


ROW_GROUP_ROWS = 1024


def leaf_paths(schema: pa.Schema) -> list[str]:
    """Parquet's leaf column paths of an Arrow schema (``vz_shape.list.element``, ...): the
    names that per-column writer options must use, or nested columns silently miss them."""
    buf = io.BytesIO()
    pq.write_table(schema.empty_table(), buf)
    buf.seek(0)
    parquet_schema = pq.ParquetFile(buf).schema
    return [parquet_schema.column(i).path for i in range(len(parquet_schema))]


class ArchiveWriter:
    """Streams rows into one archive file; the schema is fixed by the first batch.

    Rows are gathered into row groups of ``ROW_GROUP_ROWS`` whatever the model's batch size,
    so the file's size and layout do not depend on ``--batch-rows``. As a context manager it
    writes the footer on success and only releases the Parquet writer on an error (the
    caller's atomic write then discards the file).
    """

    def __init__(self, f: storage.Sink, meta: ArchiveMeta, uri: str) -> None:
        self.f, self.meta, self.uri = f, meta, uri
        self.features: dict[str, Any] = {}
        self.writer: pq.ParquetWriter | None = None
        self.schema: pa.Schema | None = None
        self.pending: list[pa.Table] = []

    def __enter__(self) -> ArchiveWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is None:
            self.close()
        elif self.writer is not None:
            with contextlib.suppress(OSError, pa.ArrowException):
                self.writer.close()
            self.writer = None

    def write(
        self, rows: CodeRows, passthrough: dict[str, list], features: dict[str, Any] | None = None
    ) -> None:
        """``features``: the source's Hugging Face features of passthrough columns, if any."""
        if features and not self.features:
            self.features = {k: v for k, v in features.items() if k in passthrough}
        for name in passthrough:
            if name.startswith(PREFIX):
                raise InputError(
                    self.meta.source_uri, f"source column {name!r} uses the reserved prefix {PREFIX!r}"
                )
        if self.schema is None:
            fields = list(BASE_FIELDS)
            for name, values in passthrough.items():
                fields.append(pa.field(name, pa.array(values).type))
            self.schema = pa.schema(fields)
            compression = {path: "zstd" for path in leaf_paths(self.schema)}
            codes, level = self.meta.codec.column_compression
            compression["vz_codes"] = codes
            levels = {"vz_codes": level} if level is not None else None
            self.writer = pq.ParquetWriter(
                self.f,
                self.schema,
                compression=compression,
                compression_level=levels,
                write_page_checksum=True,
                use_dictionary=["vz_dtype"],
                write_statistics=["vz_key"],
                store_schema=False,
            )
        names = set(self.schema.names) - set(BASE_NAMES)
        if set(passthrough) != names:
            raise InputError(
                self.meta.source_uri,
                f"passthrough columns changed from {sorted(names)} to {sorted(passthrough)}",
            )
        try:
            table = pa.table({**rows.columns(), **passthrough}, schema=self.schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError) as err:
            raise InputError(
                self.meta.source_uri, f"passthrough values do not fit the first rows' types ({err})"
            ) from err
        self.pending.append(table)
        if sum(len(t) for t in self.pending) >= ROW_GROUP_ROWS:
            self._flush(final=False)

    def _flush(self, final: bool) -> None:
        if not self.pending:
            return
        assert self.writer is not None
        table = pa.concat_tables(self.pending)
        keep = len(table) if final else len(table) // ROW_GROUP_ROWS * ROW_GROUP_ROWS
        self.writer.write_table(table.slice(0, keep), row_group_size=ROW_GROUP_ROWS)
        self.pending = [table.slice(keep)] if keep < len(table) else []

    def close(self) -> None:
        self._flush(final=True)
        if self.writer is not None:
            # Footer key-value metadata, written once (store_schema=False above keeps pyarrow
            # from storing a second, base64 copy of it inside the serialized Arrow schema).
            raw = self.meta.to_json().encode()
            metadata = {META_KEY: raw, META_SHA256_KEY: hashlib.sha256(raw).hexdigest().encode()}
            if self.features:
                metadata[HF_KEY] = hf_metadata(self.features)
            self.writer.add_key_value_metadata(metadata)
            self.writer.close()
            self.writer = None


# -- reading --------------------------------------------------------------------------------


def archive_files(uri: str) -> list[str]:
    """An archive folder, glob or single file -> its ``.vz.parquet`` files, sorted."""
    try:
        files = storage.expand(uri, (ARCHIVE_SUFFIX,))
    except FileNotFoundError as err:
        raise InputError(uri, "no such archive") from err
    if not files:
        raise InputError(uri, f"no archive files (*{ARCHIVE_SUFFIX}) found")
    return files


def read_keys(uri: str, data: bytes | None = None) -> list[str]:
    """An archive file's sample keys alone (one small column; of ``data``, where given)."""
    try:
        with _open(uri, data) as f:
            return [str(k) for k in pq.ParquetFile(f).read(columns=["vz_key"])["vz_key"].to_pylist()]
    except FileNotFoundError as err:
        raise InputError(uri, "archive file not found") from err
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        raise InputError(uri, f"not a readable Parquet archive ({err})") from err


@dataclass(frozen=True)
class StoredBatch:
    """Consecutive stored rows of one archive file, from row ``start``."""

    uri: str
    start: int
    rows: CodeRows
    columns: dict[str, list]  # passthrough columns


def latent_shape_counts(uri: str) -> dict[tuple[int, ...], int]:
    """How many of an archive file's rows have each latent shape: one column read (what the
    training reader needs to give every rank equal batches of a bucketed archive)."""
    try:
        with _open(uri, None) as f:
            column = pq.ParquetFile(f).read(columns=["vz_latent_shape"]).column(0)
    except FileNotFoundError as err:
        raise InputError(uri, "archive file not found") from err
    except (pa.ArrowInvalid, OSError, KeyError) as err:
        raise InputError(uri, f"not a readable Parquet archive ({err})") from err
    return dict(collections.Counter(tuple(s) for s in column.to_pylist()))


def iter_stored(
    uri: str, batch_rows: int = 256, columns: list[str] | None = None, data: bytes | None = None
) -> Iterator[StoredBatch]:
    """One archive file's rows as stored, in order, every page checksum verified. ``columns``
    limits the passthrough columns read (default: all); ``data``: the file's bytes, where the
    caller has read (and checked) them."""
    with _open(uri, data) as f:
        start = 0
        try:
            pf = pq.ParquetFile(f, page_checksum_verification=True)
            names = pf.schema_arrow.names
            missing = set(BASE_NAMES) - set(names)
            if missing:
                raise InputError(uri, f"not a vaezip archive: no columns {sorted(missing)}")
            wanted = [n for n in names if n not in BASE_NAMES and (columns is None or n in columns)]
            unknown = set(columns or ()) - set(names)
            if unknown:
                raise InputError(uri, f"no such passthrough columns {sorted(unknown)}")
            for rb in pf.iter_batches(batch_size=batch_rows, columns=BASE_NAMES + wanted):
                cols = rb.to_pydict()
                yield StoredBatch(uri, start, CodeRows.from_columns(cols), {k: cols[k] for k in wanted})
                start += rb.num_rows
        except GeneratorExit:  # closed unfinished, maybe at exit, when ``pa`` may be gone already
            raise
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(uri, f"corrupt Parquet data ({err})", row=start) from err
