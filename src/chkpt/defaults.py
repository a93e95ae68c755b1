"""The settings start-up needs before any config is loaded; config.SETTINGS refers to them."""

DEFAULT_INTERVAL = 60.0
DEFAULT_MIN_SIZE = 1024
# The first periodic checkpoint comes this soon (or at `interval`, if that is sooner), so that a
# run killed after about ten seconds of work has its data; later ones come every `interval`.
FIRST_CHECKPOINT_AFTER = 5.0
