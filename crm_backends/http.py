"""The base of every backend that speaks HTTP, and the small helpers those backends share.

:class:`HttpSource` owns, once for all of them: the session (connection pool, User-Agent, TLS
verification, timeouts inside the engine's deadline), the mapping of transport failures and HTTP
statuses to the backend errors with one message format (``tenant 't', backend 'b' (Vendor): ...``),
``Retry-After`` and rate-limit headers, the once-per-credential alert, daily quotas and the redacted
description for logs and ``config check``. A subclass keeps only its API: the requests it makes and
the mapping of its records to contacts.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from lookup_core.errors import (
    BackendError,
    BackendUnavailable,
    ContactNotFound,
    CredentialsRejected,
    DeliveryRefused,
    RateLimited,
)
from lookup_core.redact import REDACTED, is_secret_name, mask_json_secrets, mask_numbers

from .base import Backend, BackendSpec

USER_AGENT = "phone-lookup-service (peoplefone CONNECTOR)"


T = TypeVar("T")


class HttpStatusError(BackendUnavailable):
    """An answer with a status the base does not map by itself (a 4xx other than 401/403/429);
    ``status`` and ``body`` (decoded JSON or None) let the backend look closer."""

    def __init__(self, message: str, status: int, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


class HttpSource(Backend):
    """A backend reached over HTTP. Subclasses add their headers to ``self.session``, call
    :meth:`send`, then :meth:`check_status` (or :meth:`status_error`) on the answer, and raise
    their own errors with :meth:`fail`'s message."""

    # The source's name in messages; by default the CRM name the backend declares, else its type.
    vendor: ClassVar[str | None] = None
    # The engine's worker threads share one session: pool as many connections as it has threads.
    pool_size: ClassVar[int] = 16
    # True: a 4xx the base does not map is an HttpStatusError carrying status and body, for a
    # backend that looks closer at it; False: a plain BackendUnavailable.
    status_errors: ClassVar[bool] = False
    alerts_credentials: ClassVar[bool] = True  # through CredentialAlert

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        # what the base logs is said in the name of the backend's own module
        self.log = logging.getLogger(type(self).__module__)
        self.session = self.new_session(verify=self.options.get("verify_tls", True))
        self.credentials = CredentialAlert(self)
        self._window_until = 0.0  # time.monotonic(): the source's rate-limit window is used up
        self._window_lock = threading.Lock()

    # session ------------------------------------------------------------------------------------
    def new_session(self, *, verify: bool | str = True) -> requests.Session:
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=self.pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers["User-Agent"] = USER_AGENT
        session.verify = verify
        return session

    def close(self) -> None:
        self.session.close()

    # messages ----------------------------------------------------------------------------------
    @property
    def where(self) -> str:
        """Who speaks in a message: ``tenant 't', backend 'b' (Vendor)``."""
        return f"{self.spec.where()} ({self.vendor or self.default_crm_name or self.type_name})"

    def fail(self, text: str) -> str:
        """The one message format of every error this backend raises: names tenant and backend."""
        return f"{self.where}: {text}"

    def budget(self, deadline: float) -> float:
        """The timeout of a request that must be answered by ``deadline`` (``time.monotonic()``)."""
        remaining = deadline - time.monotonic()
        if remaining <= 0.01:
            raise BackendUnavailable(self.fail("no time left before the deadline"))
        return min(self.timeout_s, remaining)

    # transport ---------------------------------------------------------------------------------
    def send(
        self, method: str, url: str, *, what: str, timeout: float | None = None, **kwargs: Any
    ) -> requests.Response:
        """One request; every transport failure becomes :class:`BackendUnavailable`. ``what``
        names the request in messages (no secrets: a path or a redacted URL)."""
        timeout = timeout or self.timeout_s
        try:
            return self.session.request(method, url, timeout=timeout, **kwargs)
        except requests.Timeout:
            raise BackendUnavailable(self.fail(f"{what} did not answer within {timeout:.3g}s")) from None
        except requests.exceptions.SSLError as exc:
            raise BackendUnavailable(self.fail(f"{what} failed, TLS error: {reason(exc)}")) from None
        except requests.ConnectionError as exc:
            raise BackendUnavailable(self.fail(f"{what} unreachable: {reason(exc)}")) from None
        except (requests.RequestException, ValueError) as exc:  # ValueError: an unsendable URL/header
            raise BackendUnavailable(self.fail(f"{what} failed: {type(exc).__name__}: {reason(exc)}")) from None

    def status_error(
        self, response: requests.Response, what: str, *, write: bool = False, body: Any = None, detail: str = ""
    ) -> BackendError | None:
        """The error an answer's status means, None for a 2xx. ``write``: the request created a
        record, so 404/410 is the contact gone and 400/422 a refusal for good."""
        status = response.status_code
        if 200 <= status < 300:
            self.credentials.accepted()
            return None
        # the source's own words may quote what it was sent: no number or secret goes further
        said = f"{what} answered HTTP {status}" + (f": {scrub(detail)[:200]}" if detail else "")
        if status in (401, 403):
            if status == 401:
                self.credentials.rejected(said)
            return CredentialsRejected(self.fail(f"{said} (check the credentials and the API user's rights)"))
        if status == 429:
            return RateLimited(self.fail(f"{said} (rate limited)"), retry_after(response.headers))
        if status >= 500:
            return BackendUnavailable(self.fail(said))
        if write and status in (404, 410):
            return ContactNotFound(self.fail(said))
        if write and status in (400, 422):
            return DeliveryRefused(self.fail(said))
        if self.status_errors:
            return HttpStatusError(self.fail(said), status, body)
        return BackendUnavailable(self.fail(said))

    def check_status(self, response: requests.Response, what: str, **kwargs: Any) -> None:
        error = self.status_error(response, what, **kwargs)
        if error is not None:
            raise error

    # rate-limit windows -------------------------------------------------------------------------
    def note_rate_headers(self, response: requests.Response) -> None:
        """Hold requests back while an answer says the rate-limit window is used up
        (``X-RateLimit-Remaining: 0``), until it resets (``X-RateLimit-Reset``, seconds)."""
        remaining = header_number(response.headers.get("X-RateLimit-Remaining"))
        if remaining is not None and remaining <= 0:
            self.hold_off(header_number(response.headers.get("X-RateLimit-Reset")) or 2.0)

    def hold_off(self, seconds: float) -> None:
        """No request for ``seconds`` (after a 429, or a window used up)."""
        with self._window_lock:
            self._window_until = max(self._window_until, time.monotonic() + seconds)

    def wait_for_window(self, may_wait_s: float = 0.0) -> None:
        """Before a request: sleep through a held-off window shorter than ``may_wait_s`` (a sync
        may wait, a lookup may not), else raise :class:`RateLimited` without asking the source."""
        wait = self._window_until - time.monotonic()
        if wait > 0:
            if wait > may_wait_s:
                raise RateLimited(self.fail("rate limit window used up"), wait)
            time.sleep(wait)

    def with_retries(
        self, action: Callable[[], T], attempts: int, max_wait_s: float, quota: DailyQuota | None = None
    ) -> T:
        """``action()``, tried again after a :class:`RateLimited` once its wait is over (mirror syncs
        only: a lookup never waits). Gives up after ``attempts``, on a wait longer than
        ``max_wait_s``, or while ``quota`` is used up."""
        for attempt in range(attempts):
            try:
                return action()
            except RateLimited as exc:
                wait = exc.retry_after if exc.retry_after is not None else 1.0
                if attempt == attempts - 1 or wait > max_wait_s or (quota is not None and quota.left() > 0):
                    raise
                time.sleep(wait)
        raise AssertionError("attempts must be 1 or more")

    # config check ------------------------------------------------------------------------------
    def describe(self) -> dict[str, Any]:
        """Options for logs and ``config check``: secret options, secret-looking headers, query
        values and JSON fields, and credentials in URLs replaced by ``***``."""
        return {key: value if value == REDACTED else redact(value) for key, value in super().describe().items()}


class CredentialAlert:
    """Says once, as an error, that a source refused its credentials; says when they work again."""

    def __init__(self, owner: HttpSource):
        self.owner = owner
        self.rejected_now = False
        self._lock = threading.Lock()

    def rejected(self, detail: str) -> bool:
        """Note a refusal; True (and an error logged) the first time since they last worked."""
        with self._lock:
            first, self.rejected_now = not self.rejected_now, True
        self.owner.log.log(
            logging.ERROR if first else logging.DEBUG,
            "%s: credentials rejected: %s; check them in the configuration",
            self.owner.where,
            detail,
        )
        return first

    def accepted(self) -> None:
        if self.rejected_now:
            with self._lock:
                if not self.rejected_now:
                    return
                self.rejected_now = False
            self.owner.log.info("%s: accepts the credentials again", self.owner.where)


class DailyQuota:
    """A daily allowance of a source that ran out: requests it covers are refused until it resets."""

    def __init__(self, owner: HttpSource, what: str):
        self.owner = owner
        self.what = what
        self.until = 0.0  # wall clock
        self._lock = threading.Lock()

    def left(self) -> float:
        """Seconds until the allowance resets; 0 while it is not used up."""
        return max(0.0, self.until - time.time())

    def check(self) -> None:
        left = self.left()
        if left > 0:
            raise RateLimited(self.owner.fail(f"{self.what} used up, resets in {left:.0f}s"), left)

    def exhaust(self, until: float) -> float:
        """The allowance is used up until ``until`` (wall clock); logged once. Seconds left."""
        with self._lock:
            first = self.until <= time.time()
            self.until = max(self.until, until)
        if first:
            self.owner.log.warning("%s: %s used up; no requests for %.0fs", self.owner.where, self.what, self.left())
        return max(1.0, self.left())


# helpers ---------------------------------------------------------------------------------------
def next_midnight(zone: tzinfo = UTC, now: float | None = None) -> float:
    """The next midnight in ``zone`` (a daily quota's reset), as a wall-clock timestamp."""
    today = datetime.fromtimestamp(time.time() if now is None else now, zone).date()
    return datetime.combine(today + timedelta(days=1), datetime.min.time(), tzinfo=zone).timestamp()


def retry_after_seconds(value: str | None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delta-seconds or an HTTP date (RFC 9110).
    None when the header is missing or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, moment.timestamp() - time.time())


def header_number(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def retry_after(headers: Any) -> float | None:
    """How long a rate-limited client waits: ``Retry-After``, else the seconds until the rate-limit
    window resets (``X-RateLimit-Reset`` / ``RateLimit-Reset``, delta-seconds). None when unknown;
    a 0 counts as unknown (some APIs send it meaning "no wait known")."""
    return (
        retry_after_seconds(headers.get("Retry-After"))
        or header_number(headers.get("X-RateLimit-Reset"))
        or header_number(headers.get("RateLimit-Reset"))
        or None
    )


def reason(exc: BaseException) -> str:
    """The operating system's reason behind a requests error (``Connection refused``), if any."""
    todo: list[BaseException] = [exc]
    seen: set[int] = set()
    while todo:
        error = todo.pop(0)
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, OSError) and error.strerror:
            return error.strerror
        linked = [getattr(error, "reason", None), error.__cause__, error.__context__, *error.args]
        todo.extend(item for item in linked if isinstance(item, BaseException))
    return scrub(redact_urls(str(exc)))[:200]


def scrub(text: str) -> str:
    """Mask anything that may be a phone number in a text bound for a log or an error message."""
    return mask_numbers(text)


def redact_url(url: str | None) -> str | None:
    """The URL with user info and secret-looking query values replaced by ``***``."""
    if not url:
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = f"{REDACTED}@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if is_secret_name(k) else v) for k, v in pairs], safe="{}*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_urls(text: str) -> str:
    return re.sub(r"https?://\S+", lambda m: redact_url(m.group()) or "", text)


def redact(value: Any) -> Any:
    """A value for a log: secret-looking keys of tables, and credentials in URLs, replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if is_secret_name(str(k)) and v else redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        if re.match(r"https?://", value):
            return redact_url(value)
        return mask_json_secrets(value)
    return value


def json_or_none(response: requests.Response) -> Any:
    """The decoded JSON body; None for an empty or non-JSON one."""
    if not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def text(value: Any) -> str | None:
    """A string value stripped; None for anything else or blank (Odoo's ``False``, a JSON null)."""
    return value.strip() or None if isinstance(value, str) else None


def scalar(value: Any) -> str | None:
    """A string for a JSON scalar (an id may be a number); None for anything else or empty."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return None


def positive_int(value: Any) -> int | None:
    """A record id given as a positive integer or a string of digits; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    if isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
        return number if number > 0 else None
    return None


def read_time(value: Any) -> datetime | None:
    """A timezone-aware datetime from ISO 8601 text (``Z`` or an offset; UTC when it has none) or
    Unix seconds or milliseconds; None for anything else."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if value > 1e11 else value
        try:
            return datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, OSError, ValueError):
            return None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return None
