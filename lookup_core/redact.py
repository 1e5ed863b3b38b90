"""What is a secret, and how tokens, secrets and phone numbers are kept out of logs and messages.

The one place for: comparing a presented token (:func:`matching_token`, :func:`tokens_equal`),
masking one number (:func:`mask`) or every number in a text (:func:`mask_numbers`), telling a
secret by its name (:func:`is_secret_name`) and hiding secrets (:func:`mask_secrets`,
:func:`secret_values`, :func:`redact_options`).
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

REDACTED = "***"

# --- tokens ----------------------------------------------------------------------------------------


def _raw(token: str | bytes) -> bytes:
    return token if isinstance(token, bytes) else token.encode("utf-8", "surrogateescape")


def matching_token(presented: str | bytes | None, tokens: Sequence[str | bytes]) -> int | None:
    """The index of the token equal to ``presented``, or None. Every token is compared with
    ``hmac.compare_digest`` and none is skipped after a match, so the time taken says nothing about
    which token came close or where it is in the list."""
    if not presented:
        return None
    candidate = _raw(presented)
    found = None
    for index, token in enumerate(tokens):
        if hmac.compare_digest(candidate, _raw(token)) and found is None:
            found = index
    return found


def tokens_equal(presented: str | bytes | None, expected: str | bytes) -> bool:
    """``presented`` is ``expected``, compared in constant time; an empty presented token never is."""
    return matching_token(presented, [expected]) is not None


# --- phone numbers ---------------------------------------------------------------------------------


def mask(text: str | None) -> str:
    """One number for a log line: all but its last 3 digits replaced by stars (``-`` for none)."""
    if not text:
        return "-"
    digits = re.sub(r"\D", "", text)
    if len(digits) <= 3:
        return REDACTED
    return "*" * (len(digits) - 3) + digits[-3:]


# What may separate the digits of one number: spaces, - . / ( ) and +, also percent-encoded
# (%20 space, %2B +, %2D -, %2F /, %28 %29 brackets), as in a URL's query string.
_SEP = r"(?:[ \t\-./()+]|%2[0BbDdFf89])"
# Tried in order at each position: the first ones are kept as they are, the last is a number.
_TOKENS = re.compile(
    r"(?P<keep>"
    r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d])"  # IPv4
    r"|(?<!\d)\d{4}-\d\d-\d\d(?:[T ]\d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?)?(?!\d)"  # date, date and time
    r"|(?<!\d)\d{4} \d\d:\d\d(?::\d\d(?:[.,]\d{1,9})?)?(?!\d)"  # a year and a time: 01/Dec/2026 04:35:58
    r"|(?<![\d.])\d{1,9}\.\d{1,9}(?![\d.])"  # a decimal: a duration, a version
    r"|:\d{1,5}(?!\d)"  # a port, the minutes of a time
    r'|(?<=HTTP/1\.[01]" )\d{3} \d{1,9}(?!\d)'  # the status and size after a logged request line
    r")"
    rf"|(?P<number>\d(?:{_SEP}{{0,3}}\d)*)"
)
_PERCENT_SEP = re.compile(r"%2[0BbDdFf89]")
MIN_DIGITS = 6  # fewer digits than this are a port, a count, a short extension: not masked


def mask_numbers(text: str) -> str:
    """``text`` with every digit run of six digits or more (separators inside it ignored) masked
    as :func:`mask` does, and the values of secret-named parameters of URL queries by ``***``;
    addresses, dates, times, versions and durations stay readable."""

    def hide(match: re.Match[str]) -> str:
        found = match.group("number")
        if found is None:
            return match.group(0)
        digits = _PERCENT_SEP.sub("", found)
        return mask(digits) if sum(c.isdigit() for c in digits) >= MIN_DIGITS else found

    if "=" in text:
        text = _QUERY_PARAMETER.sub(_hide_secret_parameter, text)
    if not any(c.isdigit() for c in text):
        return text
    return _TOKENS.sub(hide, text)


# --- secrets -------------------------------------------------------------------------------------

# A name holding a secret: an option, a header, a query parameter, a field of a log record or of a
# JSON body. "key" and "sig" count only as the last word of a name (api_key, X-API-Key, key), so
# that "call_key_property" is not one.
_SECRET_WORDS = r"passw|pwd|secret|token|auth|credential|cookie|session|signature|api[_-]?key"
_SECRET_NAME = re.compile(rf"{_SECRET_WORDS}|(?:^|[^a-z0-9])(?:key|sig)$", re.I)
# A credential in a URL's query (an API key in a backend's lookup_url) as a library logs the URL.
_QUERY_PARAMETER = re.compile(r"([?&;])([A-Za-z0-9_.\-\[\]]+)=([^&;#\s\"']+)")
# A member of a JSON text whose value is a string.
_JSON_MEMBER = re.compile(r'"([^"\\]*)"(\s*:\s*)"[^"\\]*"')


def is_secret_name(name: str) -> bool:
    """``name`` (of an option, header, query parameter, log field) says its value is a secret."""
    return bool(_SECRET_NAME.search(name))


def _hide_secret_parameter(match: re.Match[str]) -> str:
    if is_secret_name(match.group(2)):
        return f"{match.group(1)}{match.group(2)}={REDACTED}"
    return match.group(0)


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each of ``secrets`` (longest first, for one that contains another) as ``***``."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def mask_json_secrets(text: str) -> str:
    """A JSON text (a request body template) with the values of its secret-named members hidden."""
    def hide(match: re.Match[str]) -> str:
        return f'"{match.group(1)}"{match.group(2)}"{REDACTED}"' if is_secret_name(match.group(1)) else match.group(0)

    return _JSON_MEMBER.sub(hide, text)


def url_password(value: str) -> str | None:
    """The password of a URL (``scheme://user:password@host``), or None."""
    if "://" not in value or "@" not in value:
        return None
    try:
        return urlsplit(value).password
    except ValueError:
        return None


def secret_values(options: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> list[str]:
    """The secrets among configured ``options`` (nested tables too), for the log filter: values
    under a secret name or one of ``secret_keys``, and the password of any URL."""
    named = frozenset(secret_keys)
    found: list[str] = []
    for key, value in options.items():
        if isinstance(value, Mapping):
            found.extend(secret_values(value, named))
        elif isinstance(value, str):
            if key in named or is_secret_name(str(key)):
                found.append(value)
            elif password := url_password(value):
                found.append(password)
    return found


def redact_options(options: Mapping[str, Any], secret_keys: Iterable[str] = ()) -> dict[str, Any]:
    """``options`` as they may be shown (``config check``, logs): a value under a secret name or
    one of ``secret_keys`` becomes ``***``, and a URL's password too."""
    named = frozenset(secret_keys)
    shown: dict[str, Any] = {}
    for key, value in options.items():
        if value and (key in named or is_secret_name(str(key))):
            shown[key] = REDACTED
        elif isinstance(value, str) and (password := url_password(value)):
            shown[key] = value.replace(f":{password}@", f":{REDACTED}@", 1)
        else:
            shown[key] = value
    return shown
