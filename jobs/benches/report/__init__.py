"""results.json -> plots and BENCHMARKS.md, one module per part of the page.

common.py      the sections, and how figures and tables are written
provenance.py  which command, day and commit made each section (the page opens with it)
targets.py     the targets table
speed.py       efficiency and scaling, memory, hostile input
bytes.py       the codec against its bounds, latent caches, reported against verified loss
quality.py     rate-distortion against classic codecs, latent features
hardware.py    bf16 against fp32, the host side alone, the GPU, the GPU estimate
plots.py       the rate-distortion and bytes-against-loss plots
page.py        all of it in order -> BENCHMARKS.md
"""

from jobs.benches.report.common import SECTIONS
from jobs.benches.report.page import write_page
from jobs.benches.report.plots import write_plots

__all__ = ["SECTIONS", "write_page", "write_plots"]
