"""Artifacts are bytes an agent chose: a browser shows images and logs inline with their own type, and
downloads anything else; it never sniffs a type, and a name can never reach outside the artifacts."""

from tests.conftest import ADMIN, RunningServer, open_url_job

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32
HTML = b"<html><script>alert(document.cookie)</script></html>"


async def _assignment(server: RunningServer) -> tuple[int, str]:
    agent = await server.sim_agent("pc", 1)
    await server.ok("POST", "/api/jobs", open_url_job())
    await agent.wait_for(lambda: len(agent.orders) == 1)
    return next(iter(agent.orders)), agent.token


async def _get(server: RunningServer, path: str) -> tuple[int, dict[str, str], bytes]:
    async with server.session.get(server.url + path, headers={"Authorization": f"Bearer {ADMIN}"}) as r:
        return r.status, dict(r.headers), await r.read()


async def test_images_and_logs_inline_everything_else_downloaded_never_sniffed(server: RunningServer) -> None:
    assignment_id, token = await _assignment(server)
    files = {"shot.png": PNG, "photo.JPG": b"\xff\xd8\xff", "run.log": b"line\n", "notes.txt": b"hi\n",
             "page.html": HTML, "icon.svg": b"<svg onload='x()'/>", "app.apk": b"PK\x03\x04", "noext": HTML}
    for name, data in files.items():
        status, _ = await server.request("PUT", f"/api/agent/artifacts/{assignment_id}/{name}", token=token,
                                         data=data)
        assert status == 201, name
    expected = {
        "shot.png": ("image/png", "inline"), "photo.JPG": ("image/jpeg", "inline"),
        "run.log": ("text/plain; charset=utf-8", "inline"), "notes.txt": ("text/plain; charset=utf-8", "inline"),
        "page.html": ("application/octet-stream", "attachment"), "icon.svg": ("application/octet-stream", "attachment"),
        "app.apk": ("application/octet-stream", "attachment"), "noext": ("application/octet-stream", "attachment"),
    }
    for name, (content_type, disposition) in expected.items():
        status, headers, body = await _get(server, f"/api/assignments/{assignment_id}/artifacts/{name}")
        assert status == 200 and body == files[name], name
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["Content-Type"] == content_type, name
        assert headers["Content-Disposition"] == f'{disposition}; filename="{name}"', name


async def test_artifact_names_cannot_leave_the_assignment_folder(server: RunningServer) -> None:
    assignment_id, token = await _assignment(server)
    secret = server.services.settings.data_dir / "secret.txt"
    secret.write_text("do not serve")
    for name in ["..%2F..%2Fsecret.txt", "..%2Fsecret.txt", ".hidden", "%2E%2E", "a%2F..%2F..%2Fsecret.txt",
                 "..%5C..%5Csecret.txt"]:
        status, _, body = await _get(server, f"/api/assignments/{assignment_id}/artifacts/{name}")
        assert status in (404, 422) and b"do not serve" not in body, (name, status)
        status, _ = await server.request("PUT", f"/api/agent/artifacts/{assignment_id}/{name}", token=token,
                                         data=b"x")
        assert status in (404, 422), (name, status)
    assert secret.read_text() == "do not serve"


async def test_a_partial_upload_is_never_served(server: RunningServer) -> None:
    assignment_id, token = await _assignment(server)
    status, _ = await server.request("PUT", f"/api/agent/artifacts/{assignment_id}/shot.png.part", token=token,
                                     data=PNG)
    assert status == 422
    folder = server.services.settings.data_dir / "artifacts" / str(assignment_id)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "shot.png.part").write_bytes(PNG[:4])  # as an upload in progress leaves it
    status, _, _ = await _get(server, f"/api/assignments/{assignment_id}/artifacts/shot.png.part")
    assert status == 422
    assert await server.ok("GET", f"/api/assignments/{assignment_id}/artifacts") == []
