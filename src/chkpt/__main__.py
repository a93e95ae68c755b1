"""`python -m chkpt [OPTIONS] script.py …`: the runner (a first argument that is a command runs it)."""

import sys

from chkpt.cli import module_main

sys.exit(module_main())
