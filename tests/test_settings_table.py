"""The docs' settings tables are rendered from the settings' declarations, so they cannot drift."""

from __future__ import annotations

from pathlib import Path

import pytest
from pyinfra_nerdctl.deploys.settings import RootlessSettings, Settings, settings_table

ROOT = Path(__file__).resolve().parent.parent


def _table(text: str) -> str:
    """The table that starts at the ``| key | default | meaning |`` header, up to its first non-row line."""
    lines = text.splitlines()
    start = lines.index("| key | default | meaning |")
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith("|")), len(lines))
    return "\n".join(lines[start:end])


@pytest.mark.parametrize(("doc", "declared"), [("README.md", Settings), ("docs/rootless.md", RootlessSettings)])
def test_docs_settings_table_is_the_declared_one(doc, declared):
    assert _table((ROOT / doc).read_text()) == settings_table(declared)
