"""A workflow module whose import keeps ``MANY_FDS`` descriptors open (an app that
opens a connection pool or many files when it loads): the supervisor's own
descriptors made after it (its signal pipe) are numbered past 1024, beyond what
``select.select`` takes."""

from __future__ import annotations

import os

HELD = [os.open(os.devnull, os.O_RDONLY) for _ in range(int(os.environ.get("MANY_FDS", "0")))]
