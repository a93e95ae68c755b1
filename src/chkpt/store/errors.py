"""The store's errors: each names the file (or store) and the problem in one line."""


class StoreError(Exception):
    """A store that cannot be used, or a file in it that cannot be read; says which."""


class Untrusted(StoreError):
    """A store, run or file that another user could have written: never read."""


class Damaged(StoreError):
    """A store file that exists but cannot be what it should be; names the file and the problem."""


class RemoteError(StoreError):
    """A bucket that cannot be reached or used; the message says why in one line."""
