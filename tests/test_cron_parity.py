"""The dashboard checks a cron expression before sending it (dashboard/src/cron.ts); these are the cases it is
tested on (dashboard/src/cronCases.json), put to the server's own model, so the two agree on every one."""

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from phonefleet.protocol.models import ScheduleCreate

CASES = json.loads((Path(__file__).resolve().parent.parent / "dashboard" / "src" / "cronCases.json").read_text())

# what the server says for each of the dashboard's problems
SAYS = {"second": "Bad second", "minute": "Bad minute", "hour": "Bad hour", "day-of-month": "Bad day-of-month",
        "no-such-day": "Bad day-of-month", "month": "Bad month", "day-of-week": "Bad day-of-week",
        "fields": "Wrong number of fields", "empty": "a cron expression is required",
        "too-long": "at most 200 characters"}
TEMPLATE = {"title": "t", "plan": [{"type": "screenshot"}], "target_type": "all_devices"}


@pytest.mark.parametrize(("expression", "problem"), CASES["cases"])
def test_the_server_takes_the_cron_expressions_the_dashboard_takes(expression: str, problem: str | None) -> None:
    body = {"name": "n", "template": TEMPLATE, "cron": expression.strip()}  # the form sends it trimmed
    if problem is None:
        ScheduleCreate.model_validate(body)
        return
    with pytest.raises(ValidationError) as caught:
        ScheduleCreate.model_validate(body)
    [error] = caught.value.errors()
    assert error["loc"] == ("cron",) and SAYS[problem] in error["msg"], error
