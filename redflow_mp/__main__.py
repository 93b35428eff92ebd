"""``python -m redflow_mp`` is not a command: it says which ones to use (exit status 2).

The library has no command line of its own; the supervisor (``redflow-supervisor``)
runs workflows and ``redflow`` inspects them. Nothing is imported beyond the message.
"""

import sys

from .worker import NOT_A_COMMAND

print(NOT_A_COMMAND.format(name="redflow_mp"), file=sys.stderr)
raise SystemExit(2)
