"""The headless Chromium the dashboard tests drive (Debian's package, never a downloaded build), and a page in it."""

from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "dashboard"
CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
TIMEOUT_MS = 20_000


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


@pytest.fixture
async def page(browser: "Browser") -> AsyncIterator["Page"]:
    """A laptop-sized page; an uncaught error in it fails the test."""
    context = await browser.new_context(viewport={"width": 1280, "height": 860})
    context.set_default_timeout(TIMEOUT_MS)
    p = await context.new_page()
    errors: list[str] = []
    p.on("pageerror", lambda e: errors.append(str(e)))
    yield p
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"
