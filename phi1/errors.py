"""The error a user's configuration or input causes, as opposed to a bug: the command line reports it in one
line that names the file, field or flag, and exits with status 2 (`phi1.cli`)."""


class ConfigError(ValueError):
    """A setting, flag or input file that cannot be used; the message names it and says what would be right."""
