"""The documentation site: the configuration page agrees with the settings object, the site
builds in strict mode, works offline, and the README stays a front page."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from devtools import settings_page
from tests.helpers import REPO_ROOT

DOCS = REPO_ROOT / "docs"
# What a page would fetch from elsewhere when viewed: scripts, styles, images, fonts, frames.
FETCHED = re.compile(
    r"<(?:script|img|iframe|source)\b[^>]*\bsrc=[\"'](?:https?:)?//"
    r"|<link\b[^>]*\bhref=[\"'](?:https?:)?//"
    r"|url\(\s*[\"']?(?:https?:)?//"
)


def test_the_configuration_page_lists_every_setting_as_the_settings_object_defines_it() -> None:
    page = settings_page.PAGE.read_text()
    assert settings_page.rendered(page) == page, "run: .venv/bin/python -m devtools.settings_page"
    from service.settings import Settings

    for name in Settings.model_fields:
        assert f"| `CROP_YIELD_{name.upper()}` |" in page, name


def test_a_changed_setting_makes_the_page_out_of_date() -> None:
    page = settings_page.PAGE.read_text()
    stale = page.replace("| `CROP_YIELD_PORT` | `3000` |", "| `CROP_YIELD_PORT` | `8080` |")
    assert stale != page
    assert settings_page.rendered(stale) == page  # the generator puts the object's default back


def nav_pages(entries: list[object]) -> list[str]:
    pages: list[str] = []
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        pages.extend(nav_pages(value) if isinstance(value, list) else [str(value)])
    return pages


def test_every_page_of_docs_is_in_the_navigation() -> None:
    config = yaml.safe_load((REPO_ROOT / "mkdocs.yml").read_text())
    listed = nav_pages(config["nav"])
    assert sorted(listed) == sorted(p.name for p in DOCS.glob("*.md"))
    for page in listed:
        assert page in (REPO_ROOT / "README.md").read_text() or page == "index.md", f"README links {page}"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site built as `make docs` builds it (strict), into a temporary folder."""
    out = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert result.returncode == 0, result.stderr
    return out


def test_the_site_builds_strictly_with_every_page(site: Path) -> None:
    for page in DOCS.glob("*.md"):
        assert (site / page.with_suffix(".html").name).is_file(), page.name
    assert (site / "search" / "search_index.js").is_file()  # the offline plugin's search index


def test_the_site_fetches_nothing_from_elsewhere(site: Path) -> None:
    """Viewed offline, every page has its scripts, styles, fonts and pictures: none is
    fetched from another host (links a reader may follow are fine)."""
    offenders = []
    for path in sorted(site.rglob("*")):
        if path.suffix in (".html", ".css") and path.is_file():
            for match in FETCHED.finditer(path.read_text(errors="replace")):
                offenders.append(f"{path.relative_to(site)}: {match.group(0)}")
    assert not offenders, "\n".join(offenders[:20])


def test_the_pictures_are_in_the_site(site: Path) -> None:
    pictures = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", "".join(p.read_text() for p in DOCS.glob("*.md")))
    assert len(pictures) >= 3  # the architecture, the training fit, the benchmark chart
    for picture in pictures:
        assert (site / picture).is_file(), picture


def test_the_readme_is_a_front_page() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    for link in re.findall(r"\]\((docs/[^)#]+)", readme):
        assert (REPO_ROOT / link).is_file(), link
