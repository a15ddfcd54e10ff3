"""Describe an archive: ``python -m jobs.inspect ARCHIVE`` prints its manifest, metadata and
statistics (rows, bytes per row, bytes per column, shapes) without decoding anything;
``--json`` prints the same as JSON.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Sequence

import pyarrow.parquet as pq

from jobs._cli import Parser, run_main
from pipeline import storage
from pipeline.errors import InputError
from pipeline.format import BASE_NAMES, archive_files, read_meta
from pipeline.manifest import FAILURES, MANIFEST


def _json_or_none(uri: str) -> object | None:
    try:
        return json.loads(storage.read_bytes(uri))
    except FileNotFoundError:
        return None
    except ValueError as err:
        raise InputError(uri, f"not valid JSON ({err})") from err


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
        with storage.open_read(f) as fh:
            pf = pq.ParquetFile(fh)
            md = pf.metadata
            rows += md.num_rows
            for g in range(md.num_row_groups):
                for c in range(md.num_columns):
                    col = md.row_group(g).column(c)
                    column_bytes[col.path_in_schema.split(".")[0]] += col.total_compressed_size
            for field in pf.schema_arrow:
                if field.name not in BASE_NAMES:
                    passthrough[field.name] = str(field.type)
            t = pf.read(columns=["vz_shape", "vz_dtype", "vz_latent_shape"])
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
        "samples   " + "; ".join(f"{k} x{v:,}" for k, v in d["sample_shapes"].items()),
        "latents   " + "; ".join(f"{k} x{v:,}" for k, v in d["latent_shapes"].items()),
        "columns   " + (", ".join(f"{k} ({v})" for k, v in d["passthrough"].items()) or "none"),
        "bytes by column (compressed, all files):",
    ]
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
    args = p.parse_args(argv)
    d = describe(args.archive)
    print(json.dumps(d, indent=2) if args.json else as_text(d))
    return 0


def cli() -> None:
    sys.exit(run_main(main))


if __name__ == "__main__":
    cli()
