"""MkDocs hooks of the documentation site (``mkdocs.yml`` names this file).

``docs/results/index.md`` lists every results page under ``docs/results/`` (written by ``scripts/results_page.py``)
at build time, so a new page appears on the site without an edit to the nav or the index: the list replaces the
``<!-- results-pages -->`` marker.
"""

from __future__ import annotations

import re
from pathlib import Path

MARKER = "<!-- results-pages -->"


def results_pages(docs_dir: Path) -> list[tuple[str, str]]:
    """(file name, title) of each Markdown page in ``docs_dir/results`` but its index, by file name; the title is
    the page's first level-1 heading, else its file name."""
    out = []
    for path in sorted((Path(docs_dir) / "results").glob("*.md")):
        if path.name == "index.md":
            continue
        m = re.search(r"^# (.+)$", path.read_text(encoding="utf-8"), re.M)
        out.append((path.name, m.group(1).strip() if m else path.stem))
    return out


def results_list(docs_dir: Path) -> str:
    pages = results_pages(docs_dir)
    if not pages:
        return "*No results page yet.*"
    return "\n".join(f"- [{title}]({name})" for name, title in pages)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if page.file.src_uri == "results/index.md" and MARKER in markdown:
        return markdown.replace(MARKER, results_list(Path(config["docs_dir"])))
    return markdown
