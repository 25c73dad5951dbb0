"""The one exception type the command line turns into a single clear line."""


class UserError(Exception):
    """Bad input or a bad flag: the message says what is wrong, where, and what to do."""
