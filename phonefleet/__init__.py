"""phonefleet: hand jobs to a fleet of Android phones and drive them over ADB."""

__version__ = "0.1.0"
