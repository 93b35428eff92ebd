"""A Redis URL that does not parse: the error says what to change, and never
shows the password. A password holding ``[`` or ``]`` (or a mistyped IPv6 host)
was reported as holding "'/', '?' or '#'", which the URL did not hold: the fix
the message gave (%2F, %3F, %23) could not help."""

from __future__ import annotations

import pytest
import redis

from redflow_mp import create_client
from redflow_mp.connection import auth_hint
from redflow_mp.transport import check_url, mask_url

SECRET = "Pa55w0rd"


@pytest.mark.parametrize(
    "url",
    [
        f"redis://:{SECRET}[x@127.0.0.1:6379/0",
        f"redis://:x]{SECRET}@127.0.0.1:6379/0",
        f"redis://user:{SECRET}[@127.0.0.1:6379/0",
    ],
)
def test_a_bracket_in_the_password_is_named(url: str) -> None:
    with pytest.raises(ValueError) as info:
        check_url(url)
    message = str(info.value)
    assert SECRET not in message
    assert "'[' or ']'" in message and "%5B" in message and "%5D" in message, message
    assert "'/', '?' or '#'" not in message, message


def test_a_mistyped_ipv6_host_is_not_blamed_on_the_password() -> None:
    with pytest.raises(ValueError) as info:
        check_url(f"redis://:{SECRET}@[::1:6379/0")
    message = str(info.value)
    assert SECRET not in message
    assert "IPv6" in message, message
    assert "'/', '?' or '#'" not in message, message


def test_a_slash_in_the_password_is_still_named() -> None:
    with pytest.raises(ValueError, match=r"holds '/', '\?' or '#'") as info:
        check_url(f"redis://:{SECRET[:3]}/{SECRET[3:]}@127.0.0.1:6379/0")
    assert SECRET[3:] not in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        SECRET,  # the password itself where the URL should be (a secret mapped wrongly)
        f"redis//:{SECRET}@127.0.0.1:6379/0",  # the ':' of '://' forgotten
        f"redis:/:{SECRET}@127.0.0.1:6379/0",
        f"{SECRET}:x@127.0.0.1",
    ],
)
def test_a_value_without_scheme_is_never_echoed(url: str) -> None:
    """``REDFLOW_URL=redis//:secret@host`` (a typo) or the bare password: the error
    (on stderr, so in journald or a log shipper) was ``unsupported Redis URL scheme
    'redis//' in redis//:secret@host``, the password in full (for a bare password,
    twice, once lowercased as the "scheme")."""
    with pytest.raises(ValueError) as info:
        check_url(url)
    message = str(info.value)
    assert SECRET.lower() not in message.lower(), message
    assert "redis://" in message, message  # says what a URL looks like
    assert SECRET.lower() not in mask_url(url).lower()


def test_a_password_without_its_colon_is_masked() -> None:
    """``redis://secret@host`` (the ``:`` before the password forgotten: redis-py
    reads it as a user name) was shown as is by every message naming the URL:
    ``Redis at redis://secret@host/0 refused the credentials``. User info without
    a ``:`` is masked whole now (a user name alone, without password, is rare)."""
    for url in (f"redis://{SECRET}@127.0.0.1:6379/0", f"redis+sentinel://{SECRET}@h1,h2/svc"):
        assert SECRET not in mask_url(url), mask_url(url)
        assert "***@" in mask_url(url)
    assert mask_url("redis://user:pw@h/0") == "redis://user:***@h/0"  # the name stays


@pytest.mark.parametrize("url", [5, b"redis://127.0.0.1:6379/0"])
def test_a_url_that_is_not_a_str_is_a_type_error(url: object) -> None:
    """``create_client(url=5)`` (or bytes) raised ``ValueError``; a wrong type is a
    ``TypeError`` everywhere else in the API (``create_client(prefix=5)``)."""
    with pytest.raises(TypeError, match="url must be a str"):
        check_url(url)
    with pytest.raises(TypeError, match="url must be a str"):
        create_client(url, default=False)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://127.0.0.1:6379/0", "gives no password"),
        ("rediss://h:6380", "gives no password"),
        ("redis+sentinel://h1:26379,h2:26379/svc", "gives no password"),
        (f"redis://{SECRET}@h:6379/0", "a user name but no password"),
        (f"redis://:{SECRET}@h:6379/0", None),
        (f"redis://app:{SECRET}@h:6379/0", None),
        (f"redis://h:6379/0?password={SECRET}", None),
        (f"redis://:se/{SECRET}@h:6379/0", None),  # a password the parser cannot see
        ("unix:///tmp/r.sock", "gives no password"),
    ],
)
def test_a_refusal_names_a_password_missing_from_the_url(url: str, said: str | None) -> None:
    """``auth_hint``: the server's refusal (``HELLO must be called with the client
    already authenticated``) reads as a wrong password; the hint says none was
    given, and only then. Nothing for other errors; never the password."""
    refused = redis.AuthenticationError("invalid username-password pair")
    hint = auth_hint(url, refused)
    if said is None:
        assert hint == ""
    else:
        assert said in hint and SECRET not in hint, hint
    assert auth_hint("redis://h:6379/0", redis.ConnectionError("refused")) == ""
