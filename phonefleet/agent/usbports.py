"""Where a USB phone is plugged in, from sysfs: its device node (for a USB reset) and its hub and port (for a
power-cycle command such as ``uhubctl -l {hub} -p {port} -a cycle``).

Linux lists every USB device under ``/sys/bus/usb/devices/BUS-PORT[.PORT...]`` with its ``serial``, ``busnum``
and ``devnum``; the node is ``/dev/bus/usb/BBB/DDD``. A phone's adb serial is its USB serial number, so
the serial finds the port. A reset (``USBDEVFS_RESET``) makes the phone re-enumerate, as a replug does, without
touching its power.
"""

import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

SYSFS_USB = Path("/sys/bus/usb/devices")
DEV_USB = Path("/dev/bus/usb")
USBDEVFS_RESET = 0x5514
"""``_IO('U', 20)`` from linux/usbdevice_fs.h."""


@dataclass(frozen=True)
class UsbPort:
    devpath: str
    """sysfs' name of the device: ``BUS-PORT[.PORT...]`` (``1-1.4.2``)."""
    busnum: int
    devnum: int
    node: Path
    """The device node a USB reset is sent to (``/dev/bus/usb/001/007``)."""

    @property
    def hub(self) -> str:
        """The hub the phone hangs off, as uhubctl names it (``1-1.4``; a root hub is its bus: ``1``)."""
        head, dot, _ = self.devpath.rpartition(".")
        return head if dot else self.devpath.partition("-")[0]

    @property
    def port(self) -> str:
        """The phone's port on that hub."""
        tail = self.devpath.rpartition(".")[2]
        return tail.rpartition("-")[2]

    def placeholders(self) -> dict[str, str]:
        return {"hub": self.hub, "port": self.port, "busnum": str(self.busnum), "devnum": str(self.devnum),
                "devpath": self.devpath}


def is_network_serial(serial: str) -> bool:
    """``host:port`` (``adb connect``, wireless debugging) or an mDNS name: not on this PC's USB."""
    return ":" in serial or "._adb-tls-" in serial


def find(serial: str, sysfs: Path = SYSFS_USB, dev: Path = DEV_USB) -> UsbPort | None:
    """The USB device whose serial number is ``serial``, or None (not plugged in here, or no sysfs)."""
    try:
        entries = sorted(sysfs.iterdir())
    except OSError:
        return None
    for entry in entries:
        if ":" in entry.name:  # an interface (1-1.4:1.0), not a device
            continue
        try:
            if (entry / "serial").read_text().strip() != serial:
                continue
            busnum = int((entry / "busnum").read_text())
            devnum = int((entry / "devnum").read_text())
        except (OSError, ValueError):
            continue
        return UsbPort(entry.name, busnum, devnum, dev / f"{busnum:03d}" / f"{devnum:03d}")
    return None


def writable(node: Path) -> bool:
    return os.access(node, os.W_OK)


def reset(node: Path) -> None:
    """Reset the device at ``node`` (blocking, a second or so: run it in a thread); ``OSError`` says why not."""
    fd = os.open(node, os.O_WRONLY)
    try:
        fcntl.ioctl(fd, USBDEVFS_RESET, 0)
    finally:
        os.close(fd)
