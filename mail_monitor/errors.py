"""Errors that mean the monitor itself cannot do its job: exit code 3 (UNKNOWN)."""


class MonitorError(Exception):
    """Already phrased for the user, in one line."""


class ConfigError(MonitorError):
    """A configuration problem: names the file, the key path and what was expected."""


class StateError(MonitorError):
    """The state file cannot be used (not writable, locked too long)."""


class StateUnavailable(StateError):
    """The state cannot be locked or read at all: the run alerts without it (and says so)."""


class UsageError(MonitorError):
    """The command cannot be carried out as asked."""
