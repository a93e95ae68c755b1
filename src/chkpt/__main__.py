"""`python -m chkpt …`: the CLI; a first argument that is not a command runs a script."""

import sys

from chkpt.cli import main

sys.exit(main())
