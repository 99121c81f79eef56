"""MkDocs hook: adds the generated pages (CLI and settings references, benchmarks) to every build.

The pages come from ``infra.docs_pages``; they are made in memory at each
build and never written into the source folder, so they cannot go stale.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

from warden.infra import docs_pages

#: The repository: this file sits in its docs/ folder.
REPOSITORY = Path(__file__).resolve().parent.parent


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Called by MkDocs once the source files are collected: each generated page joins them."""
    for uri, text in docs_pages.pages(REPOSITORY).items():
        files.append(File.generated(config, uri, content=text))
    return files
