"""`python -m coalmine.cli`: the same as the `kubectl-coalmine` console script."""

import sys

from coalmine.cli.commands import main

sys.exit(main())
