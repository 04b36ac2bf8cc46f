"""Export the JSON Schema of the whole contract (REST bodies, resources, Socket.IO payloads).

``python -m phonefleet.protocol.schema [OUT]`` or ``phonefleet-server schema [OUT]``; the
dashboard generates its TypeScript types from this file.
"""

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from phonefleet.protocol import artifacts, audit, events, health, models, people, plan, screen, teams, timeline

REF = "#/$defs/{model}"


def contract_models() -> list[type[BaseModel]]:
    found: dict[str, type[BaseModel]] = {}
    for module in (plan, models, events, health, timeline, screen, artifacts, audit, people, teams):
        for name, value in vars(module).items():
            if (isinstance(value, type) and issubclass(value, BaseModel) and value.__module__ == module.__name__
                    and not name.startswith("_")):
                found[name] = value
    return [found[k] for k in sorted(found)]


def contract_schema() -> dict[str, Any]:
    _, schema = models_json_schema([(m, "validation") for m in contract_models()], ref_template=REF)
    names = {k: v for module in (events, health, screen) for k, v in vars(module).items()
             if k.isupper() and isinstance(v, str)}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "phonefleet contract",
        "$defs": schema.get("$defs", {}),
        "x-socketio": {"events": names, "agent_events": {k: v.__name__ for k, v in
                                                           events.AGENT_EVENT_MODELS.items()}},
        "x-step-types": list(plan.STEP_TYPES),
    }


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    text = json.dumps(contract_schema(), indent=2, sort_keys=True)
    if args:
        Path(args[0]).write_text(text + "\n")
    else:
        print(text)


if __name__ == "__main__":
    main()
