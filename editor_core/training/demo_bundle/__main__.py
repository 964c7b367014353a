"""``python -m editor_core.training.demo_bundle``: the demo pipeline's command line (``cli.py``)."""
from editor_core.training.demo_bundle.cli import main

main()
