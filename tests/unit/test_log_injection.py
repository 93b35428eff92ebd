"""Text log lines cannot be forged or recoloured by run data.

Error messages, step names and workflow names come from user code and, through
it, from users (a web app's input in an exception message). In the text format
one record must stay one line (its traceback indented below it), and no control
character (ANSI escape, carriage return, backspace) may reach the terminal or
the log shipper as it is. The JSON format already escapes them (``json.dumps``).
"""

from __future__ import annotations

import json
import logging
import sys

from redflow_supervisor.logs import _JsonFormatter, _TextFormatter

FORGED = "x\n2026-12-05 15:00:00,000 ERROR [1] redflow: forged line"
ANSI = "\x1b[2J\x1b[31mred\rback\x08\x7f\x9b31m"


def _record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError(FORGED + ANSI)
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord(
        "redflow_mp.executor", logging.WARNING, __file__, 1, msg, args, exc_info
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def _text(record: logging.LogRecord) -> str:
    return _TextFormatter("%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s").format(
        record
    )


def test_a_message_cannot_forge_a_second_line() -> None:
    out = _text(_record("run %s failed: %s", "r1", FORGED))
    assert "\n" not in out, out
    assert "\\n2026-12-05" in out


def test_run_fields_cannot_forge_a_line_or_escape_the_terminal() -> None:
    out = _text(_record("step done", workflow="wf" + ANSI, step=FORGED, run_id="r\r1"))
    assert "\n" not in out and "\r" not in out, out
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)
    assert "\\x1b[31mred" in out


def test_no_control_character_survives_in_a_message() -> None:
    out = _text(_record("%s", ANSI))
    assert not any(ord(c) < 32 or 0x7F <= ord(c) < 0xA0 for c in out), repr(out)


def test_a_traceback_stays_indented_below_its_record() -> None:
    out = _text(_record("on_failure raised", exc=True))
    _first, *rest = out.split("\n")
    assert rest, out
    # Every continuation line is indented: none can pass for a record of its own.
    assert all(line.startswith(" ") for line in rest), out
    assert "\x1b" not in out and "\r" not in out, repr(out)


def test_json_lines_stay_one_line_with_the_text_kept() -> None:
    out = _JsonFormatter().format(_record("%s", FORGED + ANSI, exc=True, step=ANSI))
    assert "\n" not in out and "\x1b" not in out
    parsed = json.loads(out)
    assert parsed["msg"] == FORGED + ANSI
    assert parsed["step"] == ANSI


def test_a_traceback_given_as_text_is_kept_masked_and_indented() -> None:
    """``logs.log_error_with_traceback`` (an on_failure hook's error) gives the
    traceback as ``exc_text``: both formatters print it, masked, as they print
    ``exc_info``."""
    tb = "Traceback (most recent call last):\n  boom\nConnectionError: redis://u:pw9@h:1/0" + FORGED
    text_record = _record("on_failure raised")
    text_record.exc_text = tb
    out = _text(text_record)
    _first, *rest = out.split("\n")
    assert rest and all(line.startswith(" ") for line in rest), out
    assert "pw9" not in out and "redis://u:***@h:1/0" in out, out
    json_record = _record("on_failure raised")
    json_record.exc_text = tb
    parsed = json.loads(_JsonFormatter().format(json_record))
    assert "pw9" not in parsed["exc"] and "ConnectionError: redis://u:***@h:1/0" in parsed["exc"]
