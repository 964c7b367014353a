"""``python -m editor_core``: the batch command line (see ``editor_core/cli.py``)."""
import sys

from editor_core.cli import main

sys.exit(main())
