"""Where chkpt keeps its config file and its store: platformdirs' user dirs.

On Linux the XDG rules are applied directly (as platformdirs does, checked by a test),
because importing platformdirs costs several milliseconds and every script start would
pay for it; other systems ask platformdirs.
"""

from __future__ import annotations

import os
import sys

APP = "chkpt"


def _xdg(variable: str, fallback: str) -> str:
    value = os.environ.get(variable, "").strip()
    base = value if value else os.path.expanduser(fallback)
    return os.path.join(base, APP)


def user_config_dir() -> str:
    """The directory of the user's config.toml (honours XDG_CONFIG_HOME)."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CONFIG_HOME", "~/.config")
    import platformdirs

    return platformdirs.user_config_dir(APP, appauthor=False)


def user_cache_dir() -> str:
    """The default store root (honours XDG_CACHE_HOME)."""
    if sys.platform.startswith("linux"):
        return _xdg("XDG_CACHE_HOME", "~/.cache")
    import platformdirs

    return platformdirs.user_cache_dir(APP, appauthor=False)


def user_config_file() -> str:
    return os.path.join(user_config_dir(), "config.toml")
