"""The settings start-up needs before any config is loaded; config.SETTINGS refers to them."""

DEFAULT_INTERVAL = 60.0
DEFAULT_MIN_SIZE = 1024
