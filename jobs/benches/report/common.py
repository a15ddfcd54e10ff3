"""What every part of the page shares: the sections, and how a figure or a table is written."""

from __future__ import annotations

NOTES = "docs/BENCHMARK_NOTES.md"
SECTIONS = (  # each a key of results.json, run by `--only NAME`
    "throughput",
    "memory",
    "bombs",
    "codec",
    "latents",
    "agreement",
    "precision",
    "host",
    "gpu",
    "rd",
    "features",
    "estimate",
    "seams",
    "scale",
    "cache",
    "calibration",
    "learned",
)
DIGIT_CODECS = ("jpeg", "webp", "jpeg_tiled", "webp_tiled", "png", "png_tiled")
BOMB_BOUND_MIB = 1536  # a worker's peak on any bomb (the reliability issue's figure)


def most_workers(rows_s: dict) -> dict:
    return rows_s[max(rows_s, key=int)]


def spread(d: dict, fmt: str = ".2f") -> str:
    return f"{d['median']:{fmt}} ({d['low']:{fmt}}-{d['high']:{fmt}})"


def latent_plot_name(name: str) -> str:
    return "rd_latents_" + "".join(ch if ch.isalnum() else "_" for ch in name.split(" ")[0].lower()) + ".png"


def ratio(row: dict, codec: str) -> str:
    if row[codec] is None:
        return "-"
    return (">= " if row.get(f"{codec}_bound") == ">=" else "") + f"{row[codec]:.2f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
    ]
