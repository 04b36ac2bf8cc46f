"""Teams in the dashboard (issue 15), in headless Chromium against a real server: an admin makes a team, adds a
person, moves an agent into it (a team that still holds an agent cannot be deleted, and the page says why) and
creates a job and a schedule for it from their forms; a person of team A sees team A only. Screenshots go to
``tests/artifacts/teams-*.png``.
"""

from typing import TYPE_CHECKING, Any

from tests.conftest import RunningServer, open_url_job
from tests.dashboard_helpers import admin_person, posts_to, shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page


async def teams_by_name(server: RunningServer) -> dict[str, Any]:
    return {t["name"]: t for t in await server.ok("GET", "/api/teams")}


async def test_an_admin_makes_a_team_adds_a_person_moves_an_agent_and_creates_a_job_for_it(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await server.sim_agent("rack-t", 3)
    person, _ = await admin_person(server.url, "operator")
    await sign_in(page, server)
    await page.get_by_role("link", name="Teams", exact=True).click()
    await expect(page.get_by_role("heading", name="Teams")).to_be_visible()
    cards = page.get_by_test_id("team")
    await expect(cards).to_have_count(1)  # the team 'default' every server has
    await expect(cards.first).to_have_attribute("data-team", "default")

    # a name the server would refuse is named before anything is sent
    sent = posts_to(page, "/api/teams")
    await page.get_by_test_id("new-team-name").fill("qa berlin")
    await page.get_by_test_id("create-team").click()
    await expect(page.get_by_test_id("new-team-form").get_by_role("alert")).to_contain_text("Letters, digits")
    assert sent == []
    await page.get_by_test_id("new-team-name").fill("qa-berlin")
    await page.get_by_test_id("create-team").click()
    qa = page.locator("[data-testid=team][data-team=qa-berlin]")
    await expect(qa.get_by_test_id("team-summary")).to_have_text("0 members · 0 agents")
    # the same name again: the server's 409 is shown
    await page.get_by_test_id("new-team-name").fill("qa-berlin")
    await page.get_by_test_id("create-team").click()
    await expect(page.get_by_test_id("teams-error")).to_contain_text("New team qa-berlin:")
    await expect(cards).to_have_count(2)

    await qa.get_by_test_id("add-member-name").fill(person)
    await qa.get_by_test_id("add-member").click()
    await expect(qa.get_by_test_id("member-name")).to_have_text([person])
    await expect(qa.get_by_test_id("team-summary")).to_have_text("1 member · 0 agents")
    assert (await teams_by_name(server))["qa-berlin"]["members"] == [person]
    # a name nobody has: the server's answer is shown
    await qa.get_by_test_id("add-member-name").fill("nobody-here")
    await qa.get_by_test_id("add-member").click()
    await expect(page.get_by_test_id("teams-error")).to_contain_text("Add nobody-here to qa-berlin:")

    # move the agent (and its phones) into the team, after a confirmation that says so
    move = page.get_by_test_id("move-agent")
    await move.get_by_test_id("move-agent-name").select_option(label="rack-t (default)")
    await move.get_by_test_id("move-agent-team").select_option(label="qa-berlin")
    await move.get_by_test_id("move-agent-submit").click()
    confirm = page.get_by_test_id("confirm-dialog")
    await expect(confirm.get_by_test_id("confirm-message")).to_contain_text(
        "This moves agent rack-t and its 3 connected phones")
    await shot(page, "teams-move-confirm")
    await confirm.get_by_test_id("confirm").click()
    await expect(page.get_by_test_id("teams-notice")).to_have_text("Agent rack-t moved to team qa-berlin.")
    await expect(qa.get_by_test_id("team-summary")).to_have_text("1 member · 1 agent")
    qa_id = (await teams_by_name(server))["qa-berlin"]["id"]

    # a team that still holds an agent cannot be deleted: the server's reason is shown, the team stays
    await qa.get_by_test_id("delete-team").click()
    await expect(confirm.get_by_test_id("confirm-message")).to_contain_text("It still has 1 agent")
    await confirm.get_by_test_id("confirm").click()
    await expect(page.get_by_test_id("teams-error")).to_contain_text("Delete team qa-berlin:")
    await expect(cards).to_have_count(2)
    await shot(page, "teams-admin")

    # rename and delete an empty team
    await page.get_by_test_id("new-team-name").fill("scratch")
    await page.get_by_test_id("create-team").click()
    scratch = page.locator("[data-testid=team][data-team=scratch]")
    await scratch.get_by_test_id("rename").click()
    await scratch.get_by_test_id("rename-input").fill("scratch-2")
    await scratch.get_by_test_id("rename-save").click()
    renamed = page.locator("[data-testid=team][data-team=scratch-2]")
    await expect(renamed.get_by_test_id("team-name")).to_have_text("scratch-2")
    await renamed.get_by_test_id("delete-team").click()
    await confirm.get_by_test_id("confirm").click()
    await expect(renamed).to_have_count(0)
    assert set(await teams_by_name(server)) == {"default", "qa-berlin"}

    # the phones page says which team each agent is in
    await page.get_by_role("link", name="Phones", exact=True).click()
    await expect(page.locator("[data-testid=agent][data-agent=rack-t]").get_by_test_id("agent-team")).to_have_text(
        "team qa-berlin")

    # a job for the team, from the form: an admin picks among every team
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_test_id("new-job").click()
    dialog = page.get_by_test_id("new-job-dialog")
    picker = dialog.get_by_test_id("team-picker")
    await expect(picker.locator("option")).to_have_text(["default", "qa-berlin"])
    await expect(picker).to_have_value("1")  # the first team, 'default', unless picked
    await picker.select_option(label="qa-berlin")
    await shot(page, "teams-new-job")
    await dialog.get_by_test_id("create").click()
    await expect(dialog).to_have_count(0)
    jobs = (await server.ok("GET", "/api/jobs"))["items"]
    assert [j["team_id"] for j in jobs] == [qa_id]
    row = page.locator(f"[data-testid=job][data-job-id='{jobs[0]['id']}']")
    await expect(row.get_by_test_id("job-team")).to_have_text("team qa-berlin")
    await shot(page, "teams-jobs")
    await row.get_by_test_id("job-title").click()
    await expect(page.get_by_test_id("fact-team")).to_have_text("qa-berlin")
    await shot(page, "teams-job-detail")

    # and a schedule for it: the schedule form asks the same
    await page.get_by_role("link", name="Schedules", exact=True).click()
    await page.get_by_test_id("new-schedule").click()
    dialog = page.get_by_test_id("new-schedule-dialog")
    await dialog.get_by_test_id("schedule-name").fill("nightly qa")
    await dialog.get_by_test_id("team-picker").select_option(label="qa-berlin")
    await dialog.get_by_test_id("create-schedule").click()
    await expect(dialog).to_have_count(0)
    schedules = (await server.ok("GET", "/api/schedules"))["items"]
    assert [(s["name"], s["team_id"]) for s in schedules] == [("nightly qa", qa_id)]


async def test_a_person_of_team_a_sees_only_team_a(server: RunningServer, page: "Page") -> None:
    """The Teams page and the forms of a person in one team, and their jobs list without team B's job (every list
    and event is checked in tests/test_team_isolation.py and tests/test_socket_access.py)."""
    from playwright.async_api import expect

    a = await server.ok("POST", "/api/teams", {"name": "team-a"})
    b = await server.ok("POST", "/api/teams", {"name": "team-b"})
    await server.ok("POST", "/api/jobs", open_url_job(title="job of team b", team_id=b["id"]))
    me = await sign_in(page, server, "operator", teams=["team-a"])

    await page.get_by_role("link", name="Teams", exact=True).click()
    cards = page.get_by_test_id("team")
    await expect(cards).to_have_count(1)
    await expect(cards.first.get_by_test_id("team-name")).to_have_text("team-a")
    await expect(cards.first.get_by_test_id("member-name")).to_have_text([me])
    # not an admin: nothing to change here
    await expect(page.get_by_test_id("new-team-form")).to_have_count(0)
    await expect(page.get_by_test_id("rename")).to_have_count(0)
    await expect(page.get_by_test_id("delete-team")).to_have_count(0)
    await expect(page.get_by_test_id("add-member")).to_have_count(0)
    await expect(page.get_by_test_id("remove-member")).to_have_count(0)
    await expect(page.get_by_test_id("move-agent")).to_have_count(0)
    await shot(page, "teams-person")

    # one team: the form does not ask, and the job goes to it
    await page.get_by_role("link", name="Jobs", exact=True).click()
    await page.get_by_test_id("new-job").click()
    dialog = page.get_by_test_id("new-job-dialog")
    await expect(dialog.get_by_test_id("title")).to_be_visible()
    await expect(dialog.get_by_test_id("team-picker")).to_have_count(0)
    await dialog.get_by_test_id("create").click()
    await expect(dialog).to_have_count(0)
    jobs = (await server.ok("GET", "/api/jobs"))["items"]
    assert sorted(j["team_id"] for j in jobs) == [a["id"], b["id"]]
    await expect(page.get_by_test_id("job-team")).to_have_text(["team team-a"])  # B's job is not listed
    await shot(page, "teams-person-jobs")
