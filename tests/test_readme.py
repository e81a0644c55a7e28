"""The README's headline figures are the report's: each row of its default-run table (arch, model,
normalized average 0-shot and few-shot) is the same row of docs/report/report.md, cell for cell, and
every relative link of the README and the docs pages points to a file that exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _rows(markdown: str, first: str) -> dict[tuple[str, str], list[str]]:
    """``{(arch, model): cells}`` of the Markdown table whose header starts with ``first``."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(first))
    rows = {}
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[(cells[0], cells[1])] = cells
    return rows


def test_readme_headline_table_is_the_reports():
    readme = _rows((ROOT / "README.md").read_text(), "| arch | model | normalized avg")
    report = _rows((ROOT / "docs" / "report" / "report.md").read_text(), "| arch | model | MMLU")
    assert readme, "the README has no headline table"
    for key, cells in readme.items():
        assert key in report, f"README row {key} is not in the report"
        assert cells[2:] == report[key][-2:], key


def test_relative_links_resolve():
    pages = [ROOT / "README.md", ROOT / "bench" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            path = target.split("#", 1)[0]
            if not path or "://" in path or path.startswith("mailto:"):
                continue
            if not (page.parent / path).exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []
