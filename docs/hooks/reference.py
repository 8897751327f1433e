"""mkdocs hook: the configuration reference generated from ``conf/`` at build time, where a
page says ``<!-- config-reference -->`` (mammo.core.config_keys)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MARK = "<!-- config-reference -->"


def on_page_markdown(markdown, page, config, files):
    if MARK not in markdown:
        return markdown
    sys.path.insert(0, str(REPO))
    from mammo.core.config_keys import reference_markdown

    return markdown.replace(MARK, reference_markdown(REPO / "conf"))
