"""The OpenAPI document tells the truth: schemathesis drives the real server (real database, an agent
with phones) from the document it serves, and every answer must be documented: its status, its
content type, its body's schema, its headers; and never a 5xx. Seeded, so a run is repeatable."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis

from phonefleet.server.api import ROUTES
from phonefleet.server.openapi import build_openapi
from tests.conftest import ADMIN
from tests.live_server_fixtures import ThreadedServer

SEED = 90_210
EXAMPLES_PER_OPERATION = 50
"""Fuzzed cases per operation, on top of the coverage phase's boundary cases (a few thousand in all)."""

CHECKS = ["not_a_server_error", "status_code_conformance", "content_type_conformance",
          "response_schema_conformance", "response_headers_conformance", "unsupported_method",
          "allow_header_conformance", "missing_required_header", "ignored_auth"]
"""Everything the document promises about an answer. Left out: the checks that judge the server's
semantics rather than its document (``positive_data_acceptance``: a well-formed id of a job that does
not exist is a 404; ``negative_data_rejection``; the stateful resource checks)."""

CONFIG = schemathesis.Config.from_dict({
    "seed": SEED,
    "generation": {"max-examples": EXAMPLES_PER_OPERATION, "database": "none", "deterministic": True},
    "phases": {"examples": {"enabled": True}, "coverage": {"enabled": True}, "fuzzing": {"enabled": True},
               "stateful": {"enabled": False}},
    "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
    "headers": {"Authorization": f"Bearer {ADMIN}"},
    "request-timeout": 30,
})

# Loaded at import (pytest parametrizes by operation at collection); the test below checks that the
# running server serves this very document.
schema = schemathesis.openapi.from_dict(build_openapi(ROUTES), config=CONFIG)


@pytest.fixture(scope="module")
def session() -> Iterator[requests.Session]:
    """Counts what it sends: the run's size is printed at the end (``pytest -s``)."""
    sent = [0]

    def count(response: requests.Response, *_args: object, **_kwargs: object) -> None:
        sent[0] += 1

    with requests.Session() as s:
        s.hooks["response"].append(count)
        yield s
    print(f"\nschemathesis: {sent[0]} requests to the server (seed {SEED})")


def test_the_server_serves_the_document_under_test(threaded_server: ThreadedServer,
                                                   session: requests.Session) -> None:
    served = session.get(f"{threaded_server.url}/api/openapi.json", timeout=30).json()
    assert served == json.loads(json.dumps(build_openapi(ROUTES), default=str))


@schema.parametrize()
def test_every_answer_is_the_one_the_document_promises(case: schemathesis.Case[Any], threaded_server: ThreadedServer,
                                                        session: requests.Session) -> None:
    case.call_and_validate(base_url=threaded_server.url, session=session,
                           headers=_credentials(case, threaded_server.agent_token))


def _credentials(case: schemathesis.Case[Any], agent_token: str) -> dict[str, str]:
    """The token the operation's route asks for (the configured per-operation headers do not reach every
    phase). A case that means to leave the token out (``ignored_auth``) is re-sent by schemathesis without it."""
    return {"Authorization": f"Bearer {agent_token if 'agent' in case.operation.tags else ADMIN}"}
