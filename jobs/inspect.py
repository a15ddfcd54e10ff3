"""Describe an archive: ``python -m jobs.inspect ARCHIVE`` prints its manifest, metadata and
statistics (rows, bytes per row, bytes per column, shapes) without decoding anything;
``--json`` prints the same as JSON.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.parquet as pq

from jobs._cli import Parser, run_main
from pipeline.codec.format import BASE_NAMES, archive_files, read_meta
from pipeline.core import storage
from pipeline.core.errors import InputError
from pipeline.ledger.integrity import check_archive
from pipeline.ledger.manifest import FAILURES, MANIFEST


def _json_or_none(uri: str) -> object | None:
    try:
        return json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise InputError(uri, f"not valid JSON ({err})") from err


def _read_file(f: str, column_bytes: Counter[str], passthrough: dict[str, str]) -> pa.Table:
    """One file's column sizes and passthrough types (added to the totals) and its three small
    shape columns, page checksums verified."""
    with storage.open_read(f) as fh:
        pf = pq.ParquetFile(fh, page_checksum_verification=True)
        md = pf.metadata
        for g in range(md.num_row_groups):
            for c in range(md.num_columns):
                col = md.row_group(g).column(c)
                column_bytes[col.path_in_schema.split(".")[0]] += col.total_compressed_size
        for field in pf.schema_arrow:
            if field.name not in BASE_NAMES:
                passthrough[field.name] = str(field.type)
        return pf.read(columns=["vz_shape", "vz_dtype", "vz_latent_shape"])


def describe(uri: str) -> dict:
    """Everything ``inspect`` prints, as one dict (footers and three small columns read)."""
    files = archive_files(uri)
    metas = [read_meta(f) for f in files]
    column_bytes: Counter[str] = Counter()
    shapes: Counter[str] = Counter()
    latent_shapes: Counter[str] = Counter()
    rows = size = 0
    passthrough: dict[str, str] = {}
    for f in files:
        try:
            t = _read_file(f, column_bytes, passthrough)
        except (pa.ArrowInvalid, OSError) as err:
            raise InputError(f, f"damaged archive file ({' '.join(str(err).split())})") from err
        rows += t.num_rows
        for s, d in zip(t["vz_shape"].to_pylist(), t["vz_dtype"].to_pylist(), strict=True):
            shapes[f"{'x'.join(map(str, s))} {d}"] += 1
        latent_shapes.update("x".join(map(str, s)) for s in t["vz_latent_shape"].to_pylist())
        size += storage.size(f)
    first = metas[0]

    q = first.quantizer
    manifest = _json_or_none(storage.join(uri, MANIFEST))
    failures = _json_or_none(storage.join(uri, FAILURES))
    return {
        "archive": uri,
        "files": len(files),
        "rows": rows,
        "bytes": size,
        "bytes_per_row": size / rows if rows else None,
        "manifest": "complete" if manifest else "missing (the job has not finished)",
        "failed_shards": len(failures) if isinstance(failures, list) else 0,
        "format_versions": sorted({m.format_version for m in metas}),
        "jobs": sorted({m.job_fingerprint for m in metas}),
        "model": {
            "fingerprint": first.model_fingerprint,
            "kind": first.model_config.get("kind"),
            "config": first.model_config,
        },
        "quantizer": {
            "mode": q.mode,
            "channels": q.channels,
            "active": sum(q.active),
            "levels": list(q.levels),
            "code_dtype": q.dtype.name,
        },
        "codec": {
            "level": first.codec.level,
            "layout": first.codec.layout,
            "framing": first.codec.framing,
            "dictionary_bytes": len(first.codec.dictionary),
        },
        "column_bytes": dict(column_bytes.most_common()),
        "value_range": first.value_range.to_list() if first.value_range else None,
        "sample_shapes": dict(shapes.most_common()),
        "latent_shapes": dict(latent_shapes.most_common()),
        "passthrough": passthrough,
        "sources": [m.source_uri for m in metas],
    }


def as_text(d: dict) -> str:
    q, c, m = d["quantizer"], d["codec"], d["model"]
    lines = [
        f"archive   {d['archive']}",
        f"files     {d['files']} (.vz.parquet), {d['rows']:,} rows, {d['bytes']:,} bytes "
        f"({d['bytes_per_row']:.1f} bytes/row)",
        f"manifest  {d['manifest']}"
        + (f"; {d['failed_shards']} shards failed (failures.json)" if d["failed_shards"] else ""),
        f"format    version {', '.join(map(str, d['format_versions']))}; "
        f"{len(d['jobs'])} job(s): {', '.join(j[:12] for j in d['jobs'])}",
        f"model     {m['kind']}, fingerprint {m['fingerprint'][:12]}",
        f"quantizer {q['mode']}, {q['active']} of {q['channels']} channels stored, "
        f"levels {min(q['levels'])}-{max(q['levels'])}, {q['code_dtype']} codes",
        f"codec     zstd level {c['level']}, {c['layout']}-major, {c['framing']} framing"
        + (f", dictionary {c['dictionary_bytes']:,} bytes" if c["dictionary_bytes"] else ""),
        "samples   "
        + "; ".join(f"{k} x{v:,}" for k, v in d["sample_shapes"].items())
        + (
            f"; values {d['value_range'][0]:g}..{d['value_range'][1]:g} -> 0..1"
            if d["value_range"]
            else "; values as pixels 0..255 (integers) or 0..1 (floats)"
        ),
        "latents   " + "; ".join(f"{k} x{v:,}" for k, v in d["latent_shapes"].items()),
        "columns   " + (", ".join(f"{k} ({v})" for k, v in d["passthrough"].items()) or "none"),
    ]
    problems = d.get("integrity")
    lines.append(
        "integrity "
        + (
            "not checked (--no-verify)"
            if problems is None
            else "every file matches the archive's records (size, sha256, rows)"
            if not problems
            else f"{len(problems)} file(s) FAILED:"
        )
    )
    lines += [f"  {p}" for p in problems or []]
    lines.append("bytes by column (compressed, all files):")
    total = sum(d["column_bytes"].values()) or 1
    lines += [
        f"  {k:<18}{v:>14,}  {100 * v / total:5.1f}%  {v / max(d['rows'], 1):8.2f}/row"
        for k, v in d["column_bytes"].items()
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = Parser(prog="python -m jobs.inspect", description=__doc__.split("\n\n")[0])
    p.add_argument("archive", help="archive folder, glob or file (path or URL)")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.add_argument(
        "--no-verify",
        action="store_true",
        help="skip reading every file to check its "
        "sha256 against the manifest (exit 1 when a file fails the check)",
    )
    args = p.parse_args(argv)
    d = describe(args.archive)
    d["integrity"] = check_archive(args.archive) if not args.no_verify else None
    print(json.dumps(d, indent=2) if args.json else as_text(d))
    return 1 if d["integrity"] else 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
