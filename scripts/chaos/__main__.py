"""``python scripts/chaos [options]``: the chaos orchestrator (see ``run.py``)."""

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a folder: make the ``chaos`` package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from chaos.run import main

sys.exit(main())
