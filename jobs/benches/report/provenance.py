"""The table the page opens with: which command, day and commit produced each section."""

from __future__ import annotations

from jobs.benches.report.common import SECTIONS, table


def provenance(results: dict) -> list[str]:
    """One row per section in results.json. Sections measured before runs were recorded carry
    the commit that recorded their figures (found in the history of results.json)."""
    runs = results.get("sections", {})
    rows = []
    for name in SECTIONS:
        if name not in results:
            continue
        run = runs.get(name)
        if run is None:
            rows.append([name, "not recorded", "", ""])
            continue
        commit = run.get("commit") or "unknown"
        if run.get("recorded_in"):  # the run itself was not recorded: the commit that stored it
            commit = f"recorded by {commit}"
        rows.append([name, f"`{run['command']}`", run["date"], commit])
    if not rows:
        return []
    lines = table(["section", "command", "date", "commit"], rows)
    if any(r[3].startswith("recorded by") for r in rows):
        lines += [
            "recorded by: the run came before runs were recorded; the commit is the one that stored "
            "its figures in results.json (the code measured is that commit's or its parent's).",
            "",
        ]
    return lines
