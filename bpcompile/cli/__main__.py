"""`python -m bpcompile.cli`: the `bpcompile` command."""

import sys

from .main import main

sys.exit(main())
