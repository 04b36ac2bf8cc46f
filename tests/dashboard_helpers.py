"""Helpers of the dashboard's browser tests: signing in, and screenshots kept under ``tests/artifacts/``."""

from pathlib import Path
from typing import TYPE_CHECKING

from phonefleet.sim.dashboard_scale import sign_in as sign_in_with
from tests.conftest import ADMIN, RunningServer

if TYPE_CHECKING:
    from playwright.async_api import Page, Request

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


async def shot(page: "Page", name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


async def sign_in(page: "Page", server: RunningServer) -> None:
    """Sign in with the admin token and wait until the live link is up."""
    await sign_in_with(page, server.url, ADMIN)


def posts_to(page: "Page", path: str) -> list[str]:
    """The bodies of the POSTs the page makes to ``path`` from now on, as they are sent (a form's tests check
    that nothing was sent while a field is wrong)."""
    sent: list[str] = []

    def on_request(request: "Request") -> None:
        if request.method == "POST" and request.url.endswith(path):
            sent.append(request.post_data or "")

    page.on("request", on_request)
    return sent
