"""``python -m loupe ...``: the command line (:mod:`loupe.cli`)."""
import sys

from loupe.cli import main

sys.exit(main())
