"""Errors that reach the user as one clear line."""


class ConfigError(ValueError):
    """Bad user input: a flag value, a path, a checkpoint. Printed as one line, exit code 2.

    ``quiet``: every rank found the same error; only rank 0 prints it.
    """

    quiet = False


class PeerError(RuntimeError):
    """A peer process died or stopped answering."""


class DivergedError(RuntimeError):
    """A replica's parameters became non-finite; it refuses to send them to its peers."""
