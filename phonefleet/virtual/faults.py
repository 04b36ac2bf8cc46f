"""The faults a virtual phone can be told to have, so tests and demos meet what real racks of phones do.

The shell reads the ones that change an answer (``hot``, ``hang``, ``amfail``, ``blank``); the phone acts out
the ones the adb server sees (``flap``, ``unauthorized``, ``bootloop``): ``VirtualPhone.set_fault``.
"""

from enum import StrEnum


class Fault(StrEnum):
    hot = "hot"
    """Battery at 52.0 °C (``dumpsys battery`` says temperature: 520) until cleared."""
    hang = "hang"
    """Shell commands never answer (the client's timeout ends them); adbd itself still takes ``adb reboot``,
    and the reboot ends the hang."""
    flap = "flap"
    """Offline and back again every ``flap_sec``, as a loose cable or a failing hub port does."""
    unauthorized = "unauthorized"
    """adbd asks for the host's key and no one accepts it: the adb server lists the phone ``unauthorized``."""
    bootloop = "bootloop"
    """From the next reboot: the phone comes back without finishing its boot, drops off again, and so on."""
    amfail = "amfail"
    """``am start`` (and ``monkey``) fail with an error and a non-zero exit."""
    blank = "blank"
    """The display shows one colour whatever runs (a dead panel, a hung compositor): screenshots are all black."""
    none = "none"
    """No fault: clears the one set."""


FAULT_NAMES = ", ".join(f.value for f in Fault)
HOT_TENTHS_C = 520
