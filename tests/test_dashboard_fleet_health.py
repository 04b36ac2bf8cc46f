"""Fleet health in the dashboard, end to end in headless Chromium against a real server, with ``SimAgent`` as the
agent: the phones page's filters, agent groups and reasons, the "needs attention" panel on the Jobs page, and a
phone's own page (health, thresholds, record, runs, timeline, release / quarantine / recovery). Same set-up as
``test_dashboard.py``; screenshots go to ``tests/artifacts/fleet-*.png``.
"""

import re
from typing import TYPE_CHECKING

from phonefleet.protocol import health
from phonefleet.sim.agent import SimAgent
from tests.conftest import RunningServer, open_url_job
from tests.dashboard_helpers import shot, sign_in

if TYPE_CHECKING:
    from playwright.async_api import Page

HOT = "battery 52.0 °C above 45.0 °C"
UNKNOWN = "\N{EN DASH}"  # a live figure not known now (offline)


async def phone_id(server: RunningServer, serial: str) -> int:
    (found,) = [d["id"] for d in await server.ok("GET", "/api/devices") if d["serial"] == serial]
    return int(found)


async def state_of(server: RunningServer, serial: str) -> str:
    return str((await server.ok("GET", f"/api/devices/{await phone_id(server, serial)}"))["state"])


async def run_once(server: RunningServer, agent: SimAgent, serial: str, outcome: str, code: str | None) -> None:
    """One job on one phone of ``agent``, ended as told."""
    before = set(agent.orders)
    await server.ok("POST", "/api/jobs", open_url_job(title=f"{outcome} on {serial}", max_retries=0,
                                                      target_type="device_count", target_value=1,
                                                      filters={"serials": [serial]}))
    await agent.wait_for(lambda: bool(set(agent.orders) - before))
    (aid,) = set(agent.orders) - before
    await agent.start([aid])
    await agent.finish([aid], outcome, error_code=code, error=f"{code} on purpose" if code else None)


async def test_quarantined_and_hot_phones_show_their_reasons_on_the_phones_page_and_the_attention_panel(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-a", 3)
    other = await server.sim_agent("rack-b", 2)
    cracked, hot, fine = agent.serials
    await sign_in(page, server)
    await expect(page.get_by_test_id("connected-count")).to_have_text("5")
    await expect(page.get_by_test_id("attention")).to_have_count(0)  # nothing wrong: no panel

    # both arrive live: a quarantine made elsewhere (device:event) and a hot phone's report (device:update)
    await server.ok("POST", f"/api/devices/{await phone_id(server, cracked)}/quarantine",
                    {"reason": "cracked screen"}, expect=200)
    await agent.report([{**agent.devices()[1], "healthy": False, "health_reason": HOT, "battery_temp_c": 52.0,
                         "broken": [HOT]}])
    panel = page.get_by_test_id("attention")
    await expect(panel.get_by_test_id("attention-item")).to_have_count(2)
    first, second = panel.get_by_test_id("attention-item").nth(0), panel.get_by_test_id("attention-item").nth(1)
    await expect(first).to_have_attribute("data-serial", cracked)  # the worst first
    await expect(first).to_contain_text("quarantined")
    await expect(first).to_contain_text("cracked screen")
    await expect(second).to_have_attribute("data-serial", hot)
    await expect(second).to_contain_text("hot")
    await expect(second).to_contain_text(HOT)
    await expect(panel.get_by_test_id("attention-summary")).to_have_text("1 quarantined · 1 hot")
    await shot(page, "fleet-jobs-attention")

    await page.get_by_role("link", name="Phones", exact=True).click()
    row = page.locator(f"[data-testid=phone][data-serial='{cracked}']")
    await expect(row).to_have_attribute("data-state", "quarantined")
    await expect(row.get_by_test_id("phone-state")).to_have_text("quarantined")
    await expect(row.get_by_test_id("phone-why")).to_have_text("cracked screen")
    hot_row = page.locator(f"[data-testid=phone][data-serial='{hot}']")
    await expect(hot_row.get_by_test_id("phone-state")).to_have_text("unhealthy")
    await expect(hot_row.get_by_test_id("phone-hot")).to_have_text("hot")
    await expect(hot_row).to_contain_text("52.0 °C")
    await expect(hot_row.get_by_test_id("phone-why")).to_have_text(HOT)
    groups = page.get_by_test_id("phone-group")
    await expect(groups).to_have_count(2)
    await expect(groups.nth(0).get_by_test_id("group-counts")).to_have_text(
        "3 phones: 1 idle, 1 unhealthy, 1 quarantined")
    await expect(groups.nth(0).get_by_test_id("group-attention")).to_have_text("2 need attention")
    await expect(groups.nth(1).get_by_test_id("group-attention")).to_have_count(0)
    heights = await page.evaluate("[...document.querySelectorAll('table.phones tr.line')]"
                                  ".map(r => r.getBoundingClientRect().height)")
    assert len(heights) == 7 and max(heights) - min(heights) < 1, heights  # the window counts in lines of one height
    await shot(page, "fleet-phones")

    # filters: needs attention, then a state; a collapsed group keeps its header
    await page.get_by_test_id("phone-filter").select_option("attention")
    await expect(page.get_by_test_id("phone")).to_have_count(2)
    await expect(page.get_by_test_id("phones-shown")).to_have_text("2 of 5 match")
    await expect(groups).to_have_count(1)
    await shot(page, "fleet-phones-attention")
    await page.get_by_test_id("phone-filter").select_option("idle")
    await expect(page.locator("[data-testid=phone][data-state=idle]")).to_have_count(3)
    await expect(page.get_by_test_id("phone")).to_have_count(3)
    await page.get_by_test_id("phone-filter").select_option("all")
    await groups.nth(1).get_by_test_id("group-toggle").click()
    await expect(page.get_by_test_id("phone")).to_have_count(3)
    await expect(groups.nth(1).get_by_test_id("group-toggle")).to_have_attribute("aria-expanded", "false")
    await expect(groups.nth(1).get_by_test_id("group-counts")).to_have_text("2 phones: 2 idle")
    assert fine in await page.get_by_test_id("phones").inner_text()
    assert other.serials[0] not in await page.get_by_test_id("phones").inner_text()

    # released elsewhere and cooled down: the marks go, and the panel hides itself
    await server.ok("POST", f"/api/devices/{await phone_id(server, cracked)}/release", expect=200)
    await agent.report(agent.devices()[1:2])
    await expect(row).to_have_attribute("data-state", "idle")
    await expect(hot_row.get_by_test_id("phone-hot")).to_have_count(0)
    await expect(page.get_by_test_id("attention-count")).to_have_count(0)
    await page.get_by_role("link", name="Jobs").click()
    await expect(page.get_by_test_id("attention")).to_have_count(0)


async def test_a_phones_page_shows_its_health_record_and_runs_and_its_actions_reach_the_server(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-p", 2)
    serial = agent.serials[0]
    device_id = await phone_id(server, serial)
    await run_once(server, agent, serial, "completed", None)
    await run_once(server, agent, serial, "failed", "device_lost")
    await agent.report([{**agent.devices()[0], "battery_temp_c": 31.5, "adb_state": "device", "boot_completed": True,
                         "charging": True, "screen_on": True, "screen_locked": False, "data_free_mb": 300,
                         "probe_ms": 85.0, "healthy": False, "health_reason": "/data 300 MB free, below 500 MB",
                         "broken": ["/data 300 MB free, below 500 MB"]}])
    await sign_in(page, server)
    await page.get_by_role("link", name="Phones", exact=True).click()
    await page.locator(f"[data-testid=phone][data-serial='{serial}']").get_by_test_id("phone-link").click()
    detail = page.get_by_test_id("phone-detail")
    await expect(detail.get_by_role("heading", name=serial)).to_be_visible()
    assert page.url.endswith(f"#/phones/{device_id}")
    await expect(detail.get_by_test_id("phone-state")).to_have_text("unhealthy")
    await expect(detail.get_by_test_id("phone-why")).to_contain_text("/data 300 MB free, below 500 MB")
    await expect(detail.get_by_test_id("health-facts")).to_contain_text("31.5 °C")
    await expect(detail.locator("[data-testid=threshold][data-key=min_data_free_mb]")).to_have_attribute(
        "data-broken", "true")
    await expect(detail.locator("[data-testid=threshold][data-key=max_battery_temp_c]")).to_have_attribute(
        "data-broken", "false")
    await expect(detail.get_by_test_id("reliability")).to_contain_text("50%")
    await expect(detail.get_by_test_id("last-failure")).to_contain_text("device_lost")
    await expect(detail.get_by_test_id("phone-run")).to_have_count(2)
    await expect(detail.get_by_test_id("phone-run").first).to_have_attribute("data-status", "failed")
    await expect(detail.get_by_test_id("failures-by-code")).to_contain_text("device_lost")
    await shot(page, "fleet-phone")

    # quarantine from the page: a reason is asked; the server's refusal is shown, not swallowed
    await detail.get_by_test_id("quarantine").click()
    dialog = page.get_by_test_id("quarantine-dialog")
    await dialog.get_by_test_id("confirm-quarantine").click()
    await expect(dialog.locator("#err-reason")).to_contain_text("Say why")
    await dialog.get_by_test_id("quarantine-reason").fill("battery swelling")
    await shot(page, "fleet-quarantine-dialog")
    await server.ok("POST", f"/api/devices/{device_id}/quarantine", {"reason": "first come"}, expect=200)
    await dialog.get_by_test_id("confirm-quarantine").click()
    await expect(dialog.get_by_test_id("dialog-error")).to_contain_text("quarantined already (first come)")
    await dialog.get_by_role("button", name="Cancel").click()
    await expect(detail.get_by_test_id("phone-why")).to_contain_text("first come")  # arrived live meanwhile

    # release from the page: the phone is idle (healthy again first), and the timeline says so at once
    await agent.report(agent.devices()[:1])
    await detail.get_by_test_id("release").click()
    await expect(detail.get_by_test_id("phone-state")).to_have_text("idle")
    assert await state_of(server, serial) == "idle"
    await expect(detail.get_by_test_id("action-notice")).to_contain_text("released")
    timeline = detail.get_by_test_id("event")
    await expect(timeline.first).to_have_attribute("data-kind", "released")

    await detail.get_by_test_id("quarantine").click()
    await dialog.get_by_test_id("quarantine-reason").fill("battery swelling")
    await dialog.get_by_test_id("confirm-quarantine").click()
    await expect(dialog).to_have_count(0)
    await expect(detail.get_by_test_id("phone-state")).to_have_text("quarantined")
    await expect(detail.get_by_test_id("phone-why")).to_contain_text("battery swelling")
    await expect(timeline.first).to_contain_text("battery swelling")
    assert (await server.ok("GET", f"/api/devices/{device_id}"))["quarantine_reason"] == "battery swelling"
    await detail.get_by_test_id("release").click()
    await expect(detail.get_by_test_id("phone-state")).to_have_text("idle")

    # a rung: confirmed with what it does, asked of the agent; the agent's reports reach the timeline live
    await detail.get_by_test_id("recover-reboot").click()
    confirm = page.get_by_test_id("recover-dialog")
    await expect(confirm.get_by_test_id("recover-effect")).to_contain_text("reboots the phone")
    await shot(page, "fleet-recover-dialog")
    await confirm.get_by_test_id("confirm-recover").click()
    await expect(detail.get_by_test_id("action-notice")).to_contain_text("asked to run reboot")
    await agent.wait_for(lambda: bool(agent.events(health.DEVICE_RECOVER)))
    assert agent.events(health.DEVICE_RECOVER)[0]["rung"] == "reboot"
    await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reboot", "phase": "started"})
    await expect(detail.get_by_test_id("phone-state")).to_have_text("recovering")
    await expect(timeline.first).to_contain_text("Recovery started: reboot")
    await expect(detail.get_by_test_id("recover-reboot")).to_be_disabled()
    await shot(page, "fleet-phone-recovering")
    await agent.call(health.DEVICE_RECOVERY, {"serial": serial, "rung": "reboot", "phase": "ended",
                                              "outcome": "healed", "detail": "booted in 21 s"})
    await expect(timeline.first).to_contain_text("Recovery ended: reboot (healed)")
    await expect(timeline.first).to_contain_text("booted in 21 s")
    await expect(detail.get_by_test_id("phone-state")).to_have_text("idle")


async def test_the_timeline_pages_with_older_and_shows_what_the_agent_reports_live(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await server.ok("PATCH", "/api/fleet/policy", {"quarantine": {"flap_disconnects": 1000}})
    agent = await server.sim_agent("rack-t", 1)
    device_id = await phone_id(server, agent.serials[0])
    for _ in range(15):  # 30 entries after the first connect: more than a page
        await agent.report([{**agent.devices()[0], "online": False}])
        await agent.report(agent.devices())
    await sign_in(page, server)
    await page.goto(f"{server.url}/#/phones/{device_id}")
    timeline = page.get_by_test_id("event")
    await expect(timeline).to_have_count(25)
    await page.get_by_test_id("older").click()
    await expect(timeline).to_have_count(31)
    await expect(page.get_by_test_id("older")).to_have_count(0)
    await expect(timeline.last).to_contain_text("Connected (first seen)")

    # a report recorded in the timeline (not pushed as an entry): read again as the phone's row changes
    await agent.report([{**agent.devices()[0], "healthy": False, "health_reason": HOT, "battery_temp_c": 52.0,
                         "broken": [HOT]}])
    await expect(timeline.first).to_have_attribute("data-kind", "health_changed")
    await expect(timeline.first).to_contain_text(HOT)
    await expect(timeline).to_have_count(32)
    # pushed entries arrive as they happen
    await agent.call(health.DEVICE_SELFTEST_RESULT, {"serial": agent.serials[0], "passed": False, "checks": [
        {"name": "screenshot", "passed": False, "detail": "all black"}]})
    await expect(timeline.first).to_contain_text("Self-test failed")
    await expect(timeline.first).to_contain_text("screenshot failed: all black")
    await shot(page, "fleet-phone-timeline")


async def test_a_phone_that_does_not_exist_says_so(server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    await sign_in(page, server)
    await page.goto(f"{server.url}/#/phones/987654")
    await expect(page.get_by_text("Phone 987654 does not exist")).to_be_visible()


async def test_an_offline_phone_shows_its_last_seen_age_and_battery_unknown_a_connected_one_its_battery(
        server: RunningServer, page: "Page") -> None:
    from playwright.async_api import expect

    agent = await server.sim_agent("rack-o", 2)
    gone, live = agent.serials
    await agent.report([{**agent.devices()[0], "battery": 87, "battery_temp_c": 33.5},
                        {**agent.devices()[1], "battery": 64, "battery_temp_c": 31.0}])
    await sign_in(page, server)
    await page.get_by_role("link", name="Phones", exact=True).click()
    gone_row = page.locator(f"[data-testid=phone][data-serial='{gone}']")
    live_row = page.locator(f"[data-testid=phone][data-serial='{live}']")
    await expect(gone_row.get_by_test_id("phone-battery")).to_have_text("87%")
    await expect(gone_row.get_by_test_id("phone-last-seen")).to_have_text("just now")

    # the phone drops off (live, device:update): its figures become unknown at once, its age starts
    await agent.report([{**agent.devices()[0], "online": False, "battery": 87, "battery_temp_c": 33.5}])
    await expect(gone_row).to_have_attribute("data-state", "offline")
    await expect(gone_row.get_by_test_id("phone-battery")).to_have_text(UNKNOWN)
    await expect(gone_row.get_by_test_id("phone-battery")).to_have_attribute(
        "title", "unknown while offline; last 87 %")
    await expect(gone_row.get_by_test_id("phone-temp")).to_have_text(UNKNOWN)
    await expect(gone_row.get_by_test_id("phone-temp")).to_have_attribute(
        "title", "unknown while offline; last 33.5 °C")
    await expect(gone_row.get_by_test_id("phone-last-seen")).to_have_text(re.compile(r"^\d+ s ago$"))
    await expect(live_row.get_by_test_id("phone-battery")).to_have_text("64%")
    await expect(live_row.get_by_test_id("phone-battery")).not_to_have_attribute("title", re.compile("."))
    await expect(live_row.get_by_test_id("phone-temp")).to_have_text("31.0 °C")
    await expect(live_row.get_by_test_id("phone-last-seen")).to_have_text("just now")

    # last seen 12 minutes ago (as the server records it): the page says so after a reload
    await server.services.pool.execute(
        "UPDATE devices SET last_seen_at = now() - interval '12 minutes 5 seconds' WHERE serial = $1", gone)
    await agent.report([{**agent.devices()[0], "online": False, "battery": 87}])  # offline again: not seen again
    await page.reload()
    await expect(gone_row.get_by_test_id("phone-last-seen")).to_have_text("12 min ago")
    await expect(gone_row.get_by_test_id("phone-battery")).to_have_text(UNKNOWN)
    await expect(live_row.get_by_test_id("phone-last-seen")).to_have_text("just now")
    heights = await page.evaluate("[...document.querySelectorAll('table.phones tr.line')]"
                                  ".map(r => r.getBoundingClientRect().height)")
    assert len(heights) == 3 and max(heights) - min(heights) < 1, heights  # one group header, two phones
    cols = await page.evaluate("document.querySelectorAll('table.phones thead th').length")
    assert cols == 10, cols  # COLS: the group header and spacer rows span them all
    await shot(page, "fleet-phones-offline")

    # the phone's own page: the same
    await gone_row.get_by_test_id("phone-link").click()
    detail = page.get_by_test_id("phone-detail")
    await expect(detail).to_have_attribute("data-state", "offline")
    await expect(detail.get_by_test_id("phone-last-seen")).to_contain_text("last seen 12 min ago")
    await expect(detail.get_by_test_id("health-battery")).to_have_text(UNKNOWN)
    await expect(detail.get_by_test_id("health-battery")).to_have_attribute(
        "title", "unknown while offline; last 87 %")
    await expect(detail.get_by_test_id("health-temp")).to_have_text(UNKNOWN)
    battery_check = detail.locator("[data-testid=threshold][data-key=min_battery]")
    await expect(battery_check).to_have_attribute("data-broken", "null")  # not judged on its last value
    await expect(battery_check).to_contain_text("unknown")
    assert "87%" not in await battery_check.inner_text()
    await shot(page, "fleet-phone-offline")
    await page.go_back()
    await live_row.get_by_test_id("phone-link").click()
    await expect(detail).to_have_attribute("data-state", "idle")
    await expect(detail.get_by_test_id("phone-last-seen")).to_contain_text("last seen just now")
    await expect(detail.get_by_test_id("health-battery")).to_contain_text("64%")
    await expect(detail.get_by_test_id("health-temp")).to_have_text("31.0 °C")
