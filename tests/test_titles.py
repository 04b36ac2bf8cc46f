"""The Python auto-title says what the dashboard's ``defaultTitle`` says (its tests' examples, logic.test.ts)."""

from phonefleet.protocol.titles import default_title, describe_step


def test_titles_match_the_dashboards() -> None:
    assert default_title([{"type": "open_url", "url": "https://example.com/a", "duration_sec": 60}]) \
        == "Open example.com for 60 s"
    assert default_title([{"type": "install_apk", "url": "https://h/app.apk"}]) == "Install app.apk"
    assert default_title([{"type": "launch_app", "package": "a.b"}, {"type": "wait", "duration_sec": 1},
                          {"type": "screenshot"}]) == "Launch a.b + 2 more steps"
    assert default_title([{"type": "stop_app", "package": "a.b"}, {"type": "screenshot"}]) \
        == "Stop a.b + 1 more step"
    assert default_title([]) == ""


def test_each_step_in_words() -> None:
    assert describe_step({"type": "open_url", "url": "https://example.com:8443/x"}) == "Open example.com:8443"
    assert describe_step({"type": "open_url", "url": "https://example.com/", "duration_sec": 2.5}) \
        == "Open example.com for 2.5 s"
    assert describe_step({"type": "wait", "duration_sec": 5}) == "Wait 5 s"
    assert describe_step({"type": "tap", "x": 1, "y": 2}) == "tap"
    assert len(default_title([{"type": "launch_app", "package": "a." + "b" * 300}])) == 200


def test_an_invalid_url_never_becomes_a_title() -> None:
    for url in ["example.com", "not a url", "ftp://example.com/a.apk", "http:example.com", "https://", "",
                "https://exa mple.com", "javascript:alert(1)"]:
        assert default_title([{"type": "open_url", "url": url, "duration_sec": 5}]) == "Open a web page for 5 s"
        assert default_title([{"type": "install_apk", "url": url}]) == "Install an APK"
    assert describe_step({"type": "open_url", "url": " HTTPS://Example.com:443/x "}) == "Open example.com"
    assert describe_step({"type": "install_apk", "url": "https://h/"}) == "Install https://h/"
