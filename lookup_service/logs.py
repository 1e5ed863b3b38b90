"""Logging to stdout with secrets and phone numbers masked, whatever a message contains."""

from __future__ import annotations

import logging
import re
import sys

# Six or more digits, possibly with separators: a phone number (or part of one) to mask.
_NUMBER = re.compile(r"(?<![\w.])\+?\d(?:[\d\s\-./()]{4,}\d)(?![\w])")


def mask_numbers(text: str) -> str:
    def hide(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 6:
            return match.group(0)
        return "*" * (len(digits) - 3) + digits[-3:]

    return _NUMBER.sub(hide, text)


class RedactingFilter(logging.Filter):
    """Replaces configured secrets by ``***`` and masks phone numbers in every record."""

    def __init__(self, secrets: list[str] | None = None):
        super().__init__()
        self.secrets = sorted({s for s in (secrets or []) if s}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        for secret in self.secrets:
            if secret in message:
                message = message.replace(secret, "***")
        message = mask_numbers(message)
        record.msg, record.args = message, None
        if record.exc_info and not record.exc_text:
            record.exc_text = mask_numbers(logging.Formatter().formatException(record.exc_info))
            for secret in self.secrets:
                record.exc_text = record.exc_text.replace(secret, "***")
        return True


def configure_logging(level: str, secrets: list[str]) -> None:
    """One stdout handler on the root logger, with the redacting filter (idempotent)."""
    root = logging.getLogger()
    root.setLevel(level)
    handler = next((h for h in root.handlers if getattr(h, "_lookup_service", False)), None)
    if handler is None:
        handler = logging.StreamHandler(sys.stdout)
        handler._lookup_service = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    for existing in list(handler.filters):
        handler.removeFilter(existing)
    handler.addFilter(RedactingFilter(secrets))
