"""The headless Chromium the dashboard tests drive: Debian's package, never a downloaded build."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()


@pytest.fixture
async def browser() -> AsyncIterator["Browser"]:
    if not HAVE_CHROMIUM:
        pytest.skip("headless Chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    try:
        import playwright.async_api as playwright
    except ImportError:
        pytest.fail("the browser tests need Playwright for Python: pip install playwright (never `playwright install`)")
    assert (DASHBOARD / "dist" / "index.html").is_file(), \
        "the dashboard is not built: cd dashboard && npm ci && npm run build"
    async with playwright.async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        await b.close()
