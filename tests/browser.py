"""Debian's Chromium, headless, driven by Playwright for Python (never Playwright's own browser
download): the fixture ``chromium`` for the web pages' tests.

Chromium runs with background networking off, so that the only requests it makes are the ones a
page makes; the tests watch those to prove that no image bytes leave the page and that nothing is
asked of a third party.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import pytest

CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    """Debian's Chromium, where it is installed."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A headless Chromium browser (Playwright ``Browser``), shared by the session's tests."""
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = chromium_path()
    if executable is None:
        pytest.skip("Debian's chromium is not installed (scripts/ensure-services.sh does it)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


#: Where the tests save screenshots: the ones the README shows (docs/screenshots) when
#: HASHSVC_UPDATE_SCREENSHOTS=1, else a folder under the system's temporary directory, so that
#: a test run leaves the checkout as it was.
SCREENSHOTS = (Path(__file__).resolve().parents[1] / "docs" / "screenshots"
               if os.environ.get("HASHSVC_UPDATE_SCREENSHOTS") == "1"
               else Path(tempfile.gettempdir()) / "hashsvc-screenshots")
