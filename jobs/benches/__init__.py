"""The parts of ``python -m jobs.bench``, one module per question the benchmark answers."""
