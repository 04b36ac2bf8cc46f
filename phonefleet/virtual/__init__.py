"""Virtual phones for demos, tests and benchmarks: adbd on loopback with a small sh behind it.

Nothing in ``phonefleet.agent`` imports this package at import time: ``phonefleet-agent run --virtual N``
loads it when asked for virtual phones.
"""

from phonefleet.virtual.faults import Fault
from phonefleet.virtual.fleet import VirtualFleet
from phonefleet.virtual.host import AdbHostClient, AdbHostError, LocalAdbServer
from phonefleet.virtual.phone import PHONE_MODELS, PhoneModel, VirtualPhone
from phonefleet.virtual.shell import VirtualShell
from phonefleet.virtual.state import ActionLog, ActionRecord, InstalledPackage, PhoneState

__all__ = [
    "PHONE_MODELS",
    "ActionLog",
    "ActionRecord",
    "AdbHostClient",
    "AdbHostError",
    "Fault",
    "InstalledPackage",
    "LocalAdbServer",
    "PhoneModel",
    "PhoneState",
    "VirtualFleet",
    "VirtualPhone",
    "VirtualShell",
]
