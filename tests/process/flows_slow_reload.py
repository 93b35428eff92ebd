"""A workflow module whose import holds while the file named by ``SLOW_RELOAD``
exists (a reload importing a heavy framework from a slow disk): the window in
which the supervisor's parent is busy outside its loop. The import creates
``<SLOW_RELOAD>.entered`` when it begins to hold, and holds 30 s at most."""

from __future__ import annotations

import os
import time
from pathlib import Path

_gate = Path(os.environ["SLOW_RELOAD"])
if _gate.exists():
    Path(f"{_gate}.entered").touch()
    _until = time.monotonic() + 30.0
    while _gate.exists() and time.monotonic() < _until:
        time.sleep(0.02)
