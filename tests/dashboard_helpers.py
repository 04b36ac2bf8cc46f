"""Helpers of the dashboard's browser tests: signing in, and screenshots kept under ``tests/artifacts/``."""

import itertools
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from phonefleet.sim.dashboard_scale import sign_in as sign_in_with
from tests.conftest import ADMIN, RunningServer

if TYPE_CHECKING:
    from playwright.async_api import Page, Request

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


async def shot(page: "Page", name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


_people = itertools.count(1)


async def admin_person(url: str, role: str = "admin", teams: list[str] | None = None) -> tuple[str, str]:
    """A new person of ``role`` (in ``teams``, by name; the server's default team unless told) on the server at
    ``url``, made with the shared admin token: (name, password)."""
    name = f"{role}-{next(_people)}"
    body: dict[str, object] = {"name": name, "role": role}
    if teams is not None:
        body["teams"] = teams
    async with aiohttp.ClientSession() as s, s.post(url + "/api/users", json=body,
                                                   headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        assert r.status == 201, await r.text()
        return name, str((await r.json())["password"])


async def sign_in(page: "Page", server: RunningServer | str, role: str = "admin",
                  teams: list[str] | None = None) -> str:
    """Sign in as a new person of ``role`` (an admin unless told; in ``teams`` if given) and wait until the live link
    is up; their name."""
    url = server if isinstance(server, str) else server.url
    name, password = await admin_person(url, role, teams)
    await sign_in_with(page, url, name, password)
    return name


def posts_to(page: "Page", path: str) -> list[str]:
    """The bodies of the POSTs the page makes to ``path`` from now on, as they are sent (a form's tests check
    that nothing was sent while a field is wrong)."""
    sent: list[str] = []

    def on_request(request: "Request") -> None:
        if request.method == "POST" and request.url.endswith(path):
            sent.append(request.post_data or "")

    page.on("request", on_request)
    return sent
