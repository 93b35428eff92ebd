"""The supervisor's log formatters mask Redis passwords in any message, as a
backstop behind ``mask_url`` (every message we write masks the URL itself)."""

from __future__ import annotations

import pytest

from redflow_supervisor.logs import mask_secrets


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("cannot reach redis://:pw-one@h:6379/0 now", "pw-one"),
        ("at redis+sentinel://:pw-two@h1:26379,h2/svc", "pw-two"),  # was shown
        ("at rediss+sentinel://u:pw-three@h1/svc", "pw-three"),  # was shown
        ("rediss://h:6380/0?ssl_keyfile=/k&ssl_password=pw-four", "pw-four"),  # was shown
        ("redis://:p@ss-five@h/0", "ss-five"),  # an '@' in the password: its tail was shown
        ("redis://u:se/cret-six@h/0", "cret-six"),
        ("unix:///run/redis.sock?password=pw-seven", "pw-seven"),
        ("refused by redis://pw-eight@h:6379/0", "pw-eight"),  # the ':' forgotten: shown
        ("refused by redis://p@ss-nine@h/0", "ss-nine"),
    ],
)
def test_passwords_are_masked_in_log_lines(text: str, secret: str) -> None:
    shown = mask_secrets(text)
    assert secret not in shown, shown
    assert "***" in shown


def test_urls_without_a_password_stay_readable() -> None:
    for text in ("redis://h:6379/0", "redis://user:***@h/0", "redis://[::1]:6379/0 down"):
        assert mask_secrets(text) == text
