"""Teams as an admin manages them: create, rename, delete (never while it owns something, never 'default'), add
and remove people, move an agent and so its phones; every change audited with before and after. A person sees
their own teams only; the CLIs do the same through the same transactions."""

import json
from typing import Any

from phonefleet.sim.agent import SimDashboard
from tests.conftest import ADMIN, RunningServer, eventually, open_url_job
from tests.test_operator_cli import Cli, cli, ok
from tests.test_people import run_cli, sign_in, with_cookie

__all__ = ["cli"]  # the operator CLI's fixture

DEFAULT = 1


async def audit_of(server: RunningServer, action: str) -> list[dict[str, Any]]:
    page = await server.ok("GET", f"/api/audit?action={action}")
    items: list[dict[str, Any]] = page["items"]
    return items


def field_of(body: dict[str, Any]) -> str:
    field: str = body["error"]["details"][0]["field"]
    return field


async def team(server: RunningServer, name: str) -> dict[str, Any]:
    created: dict[str, Any] = await server.ok("POST", "/api/teams", {"name": name})
    return created


async def person_token(server: RunningServer, name: str, role: str, teams: list[str]) -> str:
    """A personal API token of a new person of ``role`` in ``teams``."""
    created = await server.ok("POST", "/api/users", {"name": name, "role": role, "teams": teams})
    status, body, signed = await sign_in(server, name, created["password"])
    assert signed is not None, body
    status, made = await with_cookie(server, "POST", "/api/tokens", signed, csrf=signed.csrf, json={"name": "t"})
    assert status == 201, made
    secret: str = made["secret"]
    return secret


# ------------------------------------------------------------------------------------------------ teams


async def test_an_admin_creates_renames_and_deletes_a_team_each_audited(server: RunningServer) -> None:
    red = await team(server, "red")
    assert {k: red[k] for k in ("name", "members", "agents")} == {"name": "red", "members": [], "agents": 0}
    assert red["id"] != DEFAULT and red["created_at"]
    assert [t["name"] for t in await server.ok("GET", "/api/teams")] == ["default", "red"]
    assert await server.ok("GET", f"/api/teams/{red['id']}") == red

    renamed = await server.ok("PATCH", f"/api/teams/{red['id']}", {"name": "crimson"})
    assert renamed == {**red, "name": "crimson"}
    await server.ok("DELETE", f"/api/teams/{red['id']}", expect=204)
    status, body = await server.request("GET", f"/api/teams/{red['id']}")
    assert status == 404 and body["error"]["code"] == "not_found"

    [created] = await audit_of(server, "team.create")
    [rename] = await audit_of(server, "team.rename")
    [deleted] = await audit_of(server, "team.delete")
    assert (created["object_kind"], created["object_id"], created["after"]) == ("team", str(red["id"]),
                                                                                {"name": "red"})
    assert (rename["before"], rename["after"]) == ({"name": "red"}, {"name": "crimson"})
    assert (deleted["before"], deleted["after"]) == ({"name": "crimson"}, None)
    assert {e["team_id"] for e in (created, rename, deleted)} == {red["id"]}
    assert created["actor"]["name"] == "env"


async def test_team_names_are_checked_and_unique(server: RunningServer) -> None:
    red = await team(server, "red")
    for body, field in [({"name": ""}, "name"), ({"name": "a b"}, "name"), ({"name": "x" * 101}, "name"),
                        ({}, "name"), ({"name": "ok", "extra": 1}, "extra"), ({"name": 5}, "name")]:
        status, error = await server.request("POST", "/api/teams", json=body)
        assert status == 422 and field_of(error) == field, (body, error)
        status, error = await server.request("PATCH", f"/api/teams/{red['id']}", json=body)
        assert status == 422 and field_of(error) == field, (body, error)
    for method, path in [("POST", "/api/teams"), ("PATCH", f"/api/teams/{red['id']}")]:
        status, error = await server.request(method, path, json={"name": "default"})
        assert status == 409 and error["error"]["code"] == "conflict" and "default" in error["error"]["message"]
    status, _ = await server.request("PATCH", "/api/teams/999", json={"name": "blue"})
    assert status == 404
    assert await server.ok("PATCH", f"/api/teams/{red['id']}", {"name": "red"}) == red, "the same name: no change"
    assert await audit_of(server, "team.rename") == []


async def test_a_team_that_owns_something_and_the_team_default_cannot_be_deleted(server: RunningServer) -> None:
    status, body = await server.request("DELETE", f"/api/teams/{DEFAULT}")
    assert status == 409 and "default" in body["error"]["message"]
    red = await team(server, "red")
    job = await server.ok("POST", "/api/jobs", open_url_job(team_id=red["id"]))
    assert job["team_id"] == red["id"]
    status, body = await server.request("DELETE", f"/api/teams/{red['id']}")
    assert status == 409 and "1 job(s)" in body["error"]["message"]
    await server.ok("DELETE", f"/api/jobs/{job['id']}", expect=204)
    schedule = await server.ok("POST", "/api/schedules", {"name": "hourly", "template": open_url_job(),
                                                          "interval_sec": 3600, "team_id": red["id"]})
    status, body = await server.request("DELETE", f"/api/teams/{red['id']}")
    assert status == 409 and "1 schedule(s)" in body["error"]["message"]
    await server.ok("DELETE", f"/api/schedules/{schedule['id']}", expect=204)
    await server.ok("DELETE", f"/api/teams/{red['id']}", expect=204)
    status, _ = await server.request("DELETE", f"/api/teams/{red['id']}")
    assert status == 404
    assert len(await audit_of(server, "team.delete")) == 1


# ---------------------------------------------------------------------------------------------- members


async def test_people_join_teams_by_name_and_an_admin_adds_and_removes_members(server: RunningServer) -> None:
    red = await team(server, "red")
    created = await server.ok("POST", "/api/users", {"name": "ada", "role": "viewer", "teams": ["red"]})
    assert (created["person"]["team_ids"], created["person"]["teams"]) == ([red["id"]], ["red"])
    plain = await server.ok("POST", "/api/users", {"name": "bob", "role": "viewer"})
    assert (plain["person"]["team_ids"], plain["person"]["teams"]) == ([DEFAULT], ["default"])
    status, body = await server.request("POST", "/api/users", json={"name": "cy", "teams": ["red", "nope"]})
    assert status == 422 and field_of(body) == "teams" and "nope" in body["error"]["message"]
    status, body = await server.request("POST", "/api/users", json={"name": "cy", "teams": "red"})
    assert status == 422 and field_of(body) == "teams"
    assert [p["name"] for p in await server.ok("GET", "/api/users")] == ["ada", "bob"]

    added = await server.ok("PUT", f"/api/teams/{red['id']}/members/bob")
    assert added["members"] == ["ada", "bob"]
    assert await server.ok("PUT", f"/api/teams/{red['id']}/members/bob") == added, "idempotent"
    people = {p["name"]: p for p in await server.ok("GET", "/api/users")}
    assert (people["bob"]["team_ids"], people["bob"]["teams"]) == ([DEFAULT, red["id"]], ["default", "red"])
    removed = await server.ok("DELETE", f"/api/teams/{red['id']}/members/ada")
    assert removed["members"] == ["bob"]
    for method, path in [("DELETE", f"/api/teams/{red['id']}/members/ada"),  # not a member any more
                         ("PUT", f"/api/teams/{red['id']}/members/nobody"),
                         ("PUT", "/api/teams/999/members/bob")]:
        status, body = await server.request(method, path)
        assert status == 404 and body["error"]["code"] == "not_found", (method, path)

    [add] = await audit_of(server, "team.member_add")
    [remove] = await audit_of(server, "team.member_remove")
    assert (add["object_id"], add["before"]["member"], add["after"]["member"]) == (str(red["id"]), False, True)
    assert add["after"]["person"] == "bob" and remove["before"]["person"] == "ada"
    assert (remove["before"]["member"], remove["after"]["member"]) == (True, False)

    patched = await server.ok("PATCH", "/api/users/ada", {"teams": ["default", "red"]})
    assert (patched["team_ids"], patched["teams"]) == ([DEFAULT, red["id"]], ["default", "red"])
    status, body = await server.request("PATCH", "/api/users/ada", json={"teams": ["blue"]})
    assert status == 422 and field_of(body) == "teams"
    [change] = [e for e in await audit_of(server, "person.update") if "team_ids" in (e["after"] or {})]
    assert (change["before"], change["after"]) == ({"team_ids": []}, {"team_ids": [DEFAULT, red["id"]]})


async def test_a_person_sees_only_their_teams_and_cannot_manage_them(server: RunningServer) -> None:
    red, blue = await team(server, "red"), await team(server, "blue")
    token = await person_token(server, "ada", "operator", ["red"])
    status, mine = await server.request("GET", "/api/teams", token=token)
    assert status == 200 and [t["name"] for t in mine] == ["red"] and mine[0]["members"] == ["ada"]
    status, one = await server.request("GET", f"/api/teams/{red['id']}", token=token)
    assert status == 200 and one["name"] == "red"
    hidden = await server.request("GET", f"/api/teams/{blue['id']}", token=token)
    missing = await server.request("GET", "/api/teams/999", token=token)
    assert hidden[0] == missing[0] == 404
    assert hidden[1]["error"]["code"] == missing[1]["error"]["code"] == "not_found"
    status, session = await server.request("GET", "/api/session", token=token)
    assert (session["person"]["team_ids"], session["person"]["teams"]) == ([red["id"]], ["red"])
    for method, path, body in [("POST", "/api/teams", {"name": "green"}),
                               ("PATCH", f"/api/teams/{red['id']}", {"name": "green"}),
                               ("DELETE", f"/api/teams/{red['id']}", None),
                               ("PUT", f"/api/teams/{red['id']}/members/ada", None),
                               ("DELETE", f"/api/teams/{red['id']}/members/ada", None)]:
        status, _ = await server.request(method, path, token=token, json=body)
        assert status == 403, (method, path)
        status, _ = await server.request(method, path, token=None, json=body)
        assert status == 401, (method, path)
    assert [t["name"] for t in await server.ok("GET", "/api/teams")] == ["blue", "default", "red"]
    await server.ok("PUT", f"/api/teams/{blue['id']}/members/ada")  # takes effect from her next request
    status, mine = await server.request("GET", "/api/teams", token=token)
    assert [t["name"] for t in mine] == ["blue", "red"]
    assert (await server.request("GET", f"/api/teams/{blue['id']}", token=token))[0] == 200


# ----------------------------------------------------------------------------------------------- agents


async def test_a_moved_agents_phones_run_the_new_teams_jobs_and_finish_what_they_run(server: RunningServer) -> None:
    agent = await server.sim_agent("pc", 1)
    red = await team(server, "red")
    [row] = await server.ok("GET", "/api/agents")
    assert row["team_id"] == DEFAULT
    running = await server.ok("POST", "/api/jobs", open_url_job(title="default's", target_type="device_count",
                                                                 target_value=1))
    await agent.wait_for(lambda: len(agent.orders) == 1)
    waiting = await server.ok("POST", "/api/jobs", open_url_job(title="red's", team_id=red["id"],
                                                                target_type="device_count", target_value=1))
    dashboard = SimDashboard(server.url, ADMIN)
    await dashboard.connect()
    try:
        mark = len(dashboard.received)
        moved = await server.ok("PATCH", f"/api/agents/{row['id']}", {"team_id": red["id"]})
        assert moved["team_id"] == red["id"] and moved["name"] == "pc"
        await eventually(lambda: _heard(dashboard.received[mark:], row["id"], red["id"]))
    finally:
        await dashboard.disconnect()
    assert (await server.ok("GET", f"/api/teams/{red['id']}"))["agents"] == 1

    [first] = list(agent.orders)
    await agent.finish([first])  # what ran before the move finishes, and counts for its job
    await eventually(lambda: _status(server, running["id"], "completed"))
    await agent.wait_for(lambda: len(agent.orders) == 2)
    assert [o["job_id"] for o in agent.orders.values()][1] == waiting["id"]

    [move] = await audit_of(server, "agent.move")
    assert (move["object_id"], move["before"], move["after"]) == (str(row["id"]), {"team_id": DEFAULT},
                                                                  {"team_id": red["id"]})
    assert move["team_id"] == red["id"]
    status, body = await server.request("DELETE", f"/api/teams/{red['id']}")
    assert status == 409 and "1 agent(s)" in body["error"]["message"]


async def _heard(received: list[tuple[str, Any]], agent_id: int, team_id: int) -> bool:
    """A dashboard heard of the agent in its new team, and of its phones."""
    return any(name == "agent:update" and (data["agent_id"], data["team_id"]) == (agent_id, team_id)
               for name, data in received) and \
        any(name == "device:update" and any(d["agent_id"] == agent_id for d in data["devices"])
            for name, data in received)


async def _status(server: RunningServer, job_id: int, status: str) -> bool:
    return bool((await server.ok("GET", f"/api/jobs/{job_id}"))["status"] == status)


async def test_an_agent_move_names_a_bad_team_and_needs_an_admin(server: RunningServer) -> None:
    await server.sim_agent("pc", 1)
    [row] = await server.ok("GET", "/api/agents")
    for body, field in [({"team_id": 999}, "team_id"), ({"team_id": None}, "team_id"), ({"team_id": "1"}, "team_id"),
                        ({"team_id": 0}, "team_id"), ({}, "body"), ({"team": 1}, "team")]:
        status, error = await server.request("PATCH", f"/api/agents/{row['id']}", json=body)
        assert status == 422 and field_of(error) == field, (body, error)
    status, _ = await server.request("PATCH", "/api/agents/999", json={"team_id": DEFAULT})
    assert status == 404
    token = await person_token(server, "ada", "operator", ["default"])
    status, _ = await server.request("PATCH", f"/api/agents/{row['id']}", json={"team_id": DEFAULT}, token=token)
    assert status == 403
    both = await server.ok("PATCH", f"/api/agents/{row['id']}", {"team_id": DEFAULT, "max_running": 2})
    assert (both["team_id"], both["max_running"]) == (DEFAULT, 2)
    assert await audit_of(server, "agent.move") == [], "to the team it is in: no change"


# -------------------------------------------------------------------------------------------------- CLIs


async def test_the_server_cli_manages_teams_their_people_and_agents(server: RunningServer, dsn: str) -> None:
    async def done(*args: str) -> str:
        result = await run_cli(dsn, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    await done("teams", "add", "red")
    await done("teams", "add", "blue")
    await done("teams", "rename", "blue", "navy")
    password = (await done("users", "add", "ada", "--role", "operator", "--team", "red", "--team", "navy")).strip()
    await done("users", "add", "bob")
    await done("teams", "add-member", "red", "bob")
    await done("teams", "remove-member", "navy", "ada")
    token = (await done("agents", "add", "rack", "--team", "red")).strip()
    assert token.startswith("pfa_") or len(token) > 20
    await done("agents", "add", "desk")
    await done("agents", "move", "desk", "--team", "navy")

    listed = {line.split()[0]: line.split() for line in (await done("teams", "list")).splitlines()[1:]}
    assert set(listed) == {"default", "red", "navy"}
    assert listed["red"][2:] == ["1", "ada,bob"] and listed["navy"][2:] == ["1", "-"]
    people = {line.split()[0]: line.split() for line in (await done("users", "list")).splitlines()[1:]}
    assert people["ada"][4] == "red" and people["bob"][4] == "default,red"
    _, body, signed = await sign_in(server, "ada", password)
    assert signed is not None and body["person"]["teams"] == ["red"]
    agents = {a["name"]: a["team_id"] for a in await server.ok("GET", "/api/agents")}
    assert agents == {"rack": int(listed["red"][1]), "desk": int(listed["navy"][1])}

    for args, words in [(("teams", "add", "red"), ("exists",)), (("teams", "add", "bad name"), ("name",)),
                        (("teams", "delete", "red"), ("agent",)), (("teams", "delete", "default"), ("default",)),
                        (("teams", "delete", "nope"), ("nope",)), (("teams", "add-member", "red", "nobody"),
                                                                   ("nobody",)),
                        (("users", "add", "cy", "--team", "nope"), ("teams", "nope")),
                        (("agents", "move", "rack", "--team", "nope"), ("nope",)),
                        (("agents", "add", "x", "--team", "nope"), ("nope",))]:
        result = await run_cli(dsn, *args)
        assert result.returncode == 1 and "Traceback" not in result.stderr, (args, result.stderr)
        assert all(w in result.stderr for w in words), (args, result.stderr)
    await done("agents", "move", "desk", "--team", "default")
    await done("teams", "delete", "navy")
    assert "navy" not in await done("teams", "list")

    actions = [e["action"] for e in (await server.ok("GET", "/api/audit?limit=100"))["items"]]
    for action in ("team.create", "team.rename", "team.delete", "team.member_add", "team.member_remove",
                   "agent.move"):
        assert action in actions, action
    [cli_made] = await audit_of(server, "team.rename")
    assert cli_made["actor"]["kind"] == "cli" and cli_made["via"] == "cli"


async def test_the_operator_cli_lists_teams_and_creates_jobs_and_schedules_for_one(
        server: RunningServer, cli: Cli) -> None:
    red = await team(server, "red")
    listed = ok(await cli("teams"))
    assert "red" in listed and "default" in listed
    as_json = json.loads(ok(await cli("--json", "teams")))
    assert [t["name"] for t in as_json] == ["default", "red"]

    by_name = json.loads(ok(await cli("--json", "jobs", "create", "--url", "https://example.com", "--team", "red")))
    by_id = json.loads(ok(await cli("--json", "jobs", "create", "--url", "https://example.com",
                                    "--team", str(red["id"]))))
    plain = json.loads(ok(await cli("--json", "jobs", "create", "--url", "https://example.com")))
    assert (by_name["team_id"], by_id["team_id"], plain["team_id"]) == (red["id"], red["id"], DEFAULT)
    schedule = json.loads(ok(await cli("--json", "schedules", "create", "--name", "nightly", "--every", "3600",
                                       "--url", "https://example.com", "--team", "red")))
    assert schedule["team_id"] == red["id"]

    unknown = await cli("jobs", "create", "--url", "https://example.com", "--team", "nope")
    assert unknown.exit_code == 1 and "nope" in unknown.stderr
    missing = await cli("jobs", "create", "--url", "https://example.com", "--team", "999")
    assert missing.exit_code == 1 and "team_id" in missing.stderr

    await server.sim_agent("pc", 1)
    [agent] = await server.ok("GET", "/api/agents")
    moved = json.loads(ok(await cli("--json", "agents", "move", str(agent["id"]), "--team", "red")))
    assert moved["team_id"] == red["id"]
    assert "red" in ok(await cli("agents", "list")) or str(red["id"]) in ok(await cli("agents", "list"))
