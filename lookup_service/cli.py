"""Command line: ``flask --app wsgi <command>``: directory import/stats, lookup, config check, sync,
outbox list/retry/drop, users."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext

from config.settings import ConfigError, load_settings
from crm_backends.directory import DirectoryBackend
from crm_backends.directory_import import ImportFileError, file_size, import_file
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import BackendError
from lookup_core.phone import InvalidPhoneNumber, parse_number
from lookup_core.redact import mask, mask_numbers
from lookup_service.schemas import ResponseFormat


def register_cli(app: Flask) -> None:
    app.cli.add_command(directory)
    app.cli.add_command(config_group)
    app.cli.add_command(lookup_command)
    app.cli.add_command(sync_command)
    app.cli.add_command(outbox_group)
    app.cli.add_command(users_command)


def _service():
    error = current_app.extensions.get("lookup_config_error")
    if error:
        raise click.ClickException(f"configuration error: {error}")
    return current_app.extensions["lookup"]


def _tenant(service, name: str | None):
    if name is None:
        if len(service.tenants) > 1:
            names = ", ".join(t.name for t in service.tenants)
            raise click.ClickException(f"several tenants are configured ({names}); choose one with --tenant")
        return service.tenants[0]
    tenant = service.tenant(name)
    if tenant is None:
        raise click.ClickException(f"no tenant named {name!r}")
    return tenant


directory = AppGroup("directory", help="The embedded contact directory.")


def _directory_backend(tenant, name: str | None) -> DirectoryBackend:
    found = [s for s in tenant.slots if isinstance(s.backend, DirectoryBackend) and (name in (None, s.name))]
    if not found:
        named = f" named {name!r}" if name else ""
        raise click.ClickException(f"tenant {tenant.name!r} has no directory backend{named}")
    if len(found) > 1:
        raise click.ClickException("several directory backends; choose one with --backend")
    return found[0].backend  # type: ignore[return-value]


@directory.command("import")
@click.argument("path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--tenant", default=None, help="Tenant (when several are configured).")
@click.option("--backend", default=None, help="Directory backend name (when a tenant has several).")
@click.option("--sheet", default=None, help="Sheet of an .xlsx workbook (default: the first with a header row).")
def import_command(path: str, tenant: str | None, backend: str | None, sheet: str | None) -> None:
    """Import contacts from a CSV, tab-separated text, .xlsx or vCard file, or '-' for standard input
    (again: updates, never duplicates)."""
    target = _directory_backend(_tenant(_service(), tenant), backend)
    shown = "standard input" if path == "-" else click.format_filename(path)
    with ExitStack() as stack:
        path = stack.enter_context(_local_file(path))
        bar = None

        def progress(count: int) -> None:  # the bar appears once reading has begun: an error stays one line
            nonlocal bar
            if bar is None:
                bar = stack.enter_context(click.progressbar(length=file_size(path), label="importing", file=sys.stderr))
            bar.update(count)

        try:
            report = import_file(target.store, path, progress=progress, sheet=sheet)
        except ImportFileError as exc:
            raise click.ClickException(f"cannot import {shown}: {exc}") from None
    read = report.source + (f", encoding {report.encoding}" if report.encoding else "")
    click.echo(f"imported {report.imported} contacts, skipped {report.skipped} rows "
               f"(read {shown}: {read})")
    if report.columns:
        click.echo("columns:")
        for line in report.columns:
            click.echo(f"  {line}")
    if report.problems:
        click.echo("skipped rows:")
        _echo_lines(report.problems)
    if report.warnings:
        click.echo(f"{len(report.warnings)} imported rows had a value that is not a phone number:")
        _echo_lines(report.warnings)


def _echo_lines(lines: list[tuple[int, str]], limit: int = 50) -> None:
    for line, reason in lines[:limit]:
        click.echo(f"  line {line}: {reason}")
    if len(lines) > limit:
        click.echo(f"  ... and {len(lines) - limit} more")


@contextmanager
def _local_file(path: str) -> Iterator[str]:
    """``path``, or for '-' standard input copied to a temporary file (the importer reads a file
    twice: to recognize its format, then to import it). A one-off dyno gets its file this way."""
    if path != "-":
        yield path
        return
    with tempfile.NamedTemporaryFile(prefix="directory-import-", suffix=".upload") as copy:
        shutil.copyfileobj(sys.stdin.buffer, copy, 1 << 20)
        copy.flush()
        yield copy.name


@directory.command("stats")
@click.option("--tenant", default=None)
@click.option("--backend", default=None)
def stats_command(tenant: str | None, backend: str | None) -> None:
    """Print the number of contacts, phone numbers and call records."""
    target = _directory_backend(_tenant(_service(), tenant), backend)
    for key, value in target.store.stats().items():
        click.echo(f"{key}: {value}")
    click.echo(f"phone index: {target.store.snapshot_state()}")


@directory.command("index")
@click.option("--tenant", default=None)
@click.option("--backend", default=None)
def index_command(tenant: str | None, backend: str | None) -> None:
    """Build the phone index snapshot now (the service otherwise builds it after a change)."""
    target = _directory_backend(_tenant(_service(), tenant), backend)
    report = target.store.build_index()
    if not report.built:
        raise click.ClickException("another build of this phone index is running")
    click.echo(f"phone index: {report.keys} numbers in {report.seconds:.1f}s, {report.size_bytes / 1e6:.1f} MB")


@click.command("lookup")
@click.argument("number")
@click.option("--tenant", default=None)
@with_appcontext
def lookup_command(number: str, tenant: str | None) -> None:
    """Print the JSON the connector would get for NUMBER."""
    service = _service()
    chosen = _tenant(service, tenant)
    try:
        parsed = parse_number(number, chosen.region)
    except InvalidPhoneNumber as exc:
        raise click.ClickException(str(exc)) from None
    answer = service.engine.lookup(chosen, parsed)
    # the connector's rendering (ResponseFormat, as the route), indented for a person
    payload = ResponseFormat(service.settings.response_keys).payload(answer)
    click.echo(json.dumps(payload, indent=2, ensure_ascii=False))


config_group = AppGroup("config", help="Configuration.")


@config_group.command("check")
@click.argument("path", required=False, type=click.Path(dir_okay=False))
@click.option("--no-connect", is_flag=True, help="Validate only; do not contact the backends.")
@with_appcontext
def check_command(path: str | None, no_connect: bool) -> None:
    """Validate the configuration (PATH, or LOOKUP_CONFIG) and print a summary without secrets."""
    from lookup_service.tenants import build_tenants

    owned = bool(path)  # tenants built here are closed here; the running app's are not
    try:
        if path:
            settings = load_settings({"LOOKUP_CONFIG": path})
            tenants = build_tenants(settings)
        else:
            error = current_app.extensions.get("lookup_config_error")
            if error:
                raise ConfigError(error)
            service = current_app.extensions["lookup"]
            settings, tenants = service.settings, service.tenants
    except ConfigError as exc:
        click.echo(f"INVALID: {exc}", err=True)
        sys.exit(1)
    click.echo(f"configuration: {settings.source}")
    click.echo(f"token header: {settings.token_header}; response keys: {settings.response_keys}; "
               f"cache: {'redis' if settings.redis_url else 'in process'}")
    problems = 0
    for tenant in tenants:
        click.echo(f"tenant {tenant.name}: {len(tenant.tokens)} token(s), region {tenant.region}, "
                   f"deadline {int(tenant.deadline_s * 1000)} ms, max {tenant.max_results} results")
        for slot in tenant.slots:
            backend = slot.backend
            offered = [w for w in tenant.workflows() if tenant.offers(slot, w)]
            click.echo(f"  backend {slot.name}: type {slot.spec.type}, mode {slot.mode}, crm {slot.crm_name!r}, "
                       f"workflows {offered}" + (", lists users" if slot.lists_users else ""))
            details = backend.describe()
            for key in sorted(details):
                if key in ("name", "type", "mode", "crm_name", "workflows", "last_sync"):
                    continue
                click.echo(f"    {key} = {details[key]!r}")
            if isinstance(backend, MirroredBackend):
                click.echo(f"    last sync: {_describe_sync(backend.last_sync())}")
            if not no_connect:
                try:
                    backend.check()
                    click.echo("    check: ok")
                except Exception as exc:  # reported, the summary goes on
                    problems += 1
                    click.echo(f"    check: FAILED: {exc}")
        if owned:
            tenant.close()
    if problems:
        click.echo(f"{problems} backend(s) failed their check", err=True)
        sys.exit(1)


def _describe_sync(last: dict | None) -> str:
    if not last:
        return "never"
    when = datetime.fromtimestamp(last["started_at"], UTC).isoformat(timespec="seconds")
    if not last.get("ok"):
        return f"{when} FAILED: {last.get('error')}"
    kind = "incremental" if last.get("incremental") else "full"
    counts = f"{last.get('written', 0)} written, {last.get('deleted', 0)} deleted, {last.get('seconds')}s"
    return f"{when} ok ({kind}, {counts})"


@click.command("sync")
@click.argument("tenant", required=False)
@click.argument("backend", required=False)
@click.option("--full", is_flag=True, help="List everything instead of what changed since the last sync.")
@with_appcontext
def sync_command(tenant: str | None, backend: str | None, full: bool) -> None:
    """Sync mirrored backends now (all, a tenant's, or one), with a progress count."""
    service = _service()
    chosen = [
        (t, m) for t, m in service.mirrors()
        if tenant in (None, t.name) and backend in (None, m.name)
    ]
    if not chosen:
        raise click.ClickException("no mirrored backend matches (set mode = \"mirror\" on a backend)")
    failed = 0
    for owner, mirror in chosen:
        with click.progressbar(length=0, label=f"sync {owner.name}/{mirror.name}", file=sys.stderr,
                               show_pos=True, show_percent=False) as bar:
            outcome = mirror.sync_now(full=full, progress=bar.update)
        click.echo(f"{owner.name}/{mirror.name}: {_describe_sync(mirror.last_sync())}"
                   + (" (skipped: another process is syncing)" if outcome.skipped else ""))
        failed += 0 if outcome.ok else 1
    if failed:
        sys.exit(1)


outbox_group = AppGroup("outbox", help="Workflow calls waiting for delivery, or refused for good.")


def _masked_text(text: str | None) -> str:
    """A stored error message with any phone-number-like digit run masked."""
    return mask_numbers(text or "")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _outbox_item(ledger, prefix: str):
    """The pending or failed item whose key starts with ``prefix`` (the listing shows 16 characters)."""
    prefix = prefix.strip().lower()
    if len(prefix) < 8:
        raise click.ClickException("give at least the first 8 characters of the id shown by `outbox list`")
    found = [i for i in ledger.listing(("pending", "failed"), 100000) if i.key.startswith(prefix)]
    if not found:
        raise click.ClickException(f"no pending or failed call with id {prefix!r}")
    if len(found) > 1:
        raise click.ClickException(f"{len(found)} calls have ids starting with {prefix!r}; give more characters")
    return found[0]


@outbox_group.command("list")
@click.option("--failed", is_flag=True, help="Only the calls refused for good (or given up).")
@click.option("--limit", default=200, show_default=True, help="At most this many lines.")
@with_appcontext
def outbox_list(failed: bool, limit: int) -> None:
    """List the calls waiting for delivery and those refused for good; numbers are masked."""
    from lookup_service.outbox import decode_call

    ledger = _service().ledger
    items = ledger.listing(("failed",) if failed else ("pending", "failed"), limit)
    now = time.time()
    for item in items:
        try:
            call = decode_call(item.payload)
            who = f"{call.direction} {mask(call.remote_number)}"
        except (ValueError, TypeError):
            who = "?"
        when = "" if item.state != "pending" else f" next in {_age(item.next_at - now)}"
        click.echo(f"{item.key[:16]}  {item.state:7}  {item.tenant}/{item.backend} {item.workflow}  {who}  "
                   f"age {_age(now - item.created_at)}  attempts {item.attempts}{when}"
                   + (f"  error: {_masked_text(item.error)}" if item.error else ""))
    count, age = _service().outbox.backlog()
    click.echo(f"{len(items)} listed; {count} waiting for delivery" + (f", the oldest for {_age(age)}" if age else ""))


@outbox_group.command("retry")
@click.argument("item_id", required=False)
@click.option("--all-failed", is_flag=True, help="Every call refused for good or given up.")
@with_appcontext
def outbox_retry(item_id: str | None, all_failed: bool) -> None:
    """Deliver a failed call again (ID as shown by `outbox list`), or every failed one."""
    ledger = _service().ledger
    if bool(item_id) == all_failed:
        raise click.ClickException("give either an ID or --all-failed")
    if all_failed:
        keys = [i.key for i in ledger.listing(("failed",), 100000)]
    else:
        item = _outbox_item(ledger, item_id or "")
        if item.state != "failed":
            raise click.ClickException(f"{item.key[:16]} is {item.state}, not failed: it is being delivered")
        keys = [item.key]
    retried = sum(1 for key in keys if ledger.retry(key, time.time()))
    click.echo(f"{retried} call(s) queued for delivery again")


@outbox_group.command("drop")
@click.argument("item_id")
@with_appcontext
def outbox_drop(item_id: str) -> None:
    """Give up a pending or failed call for good (it is not recorded in the CRM)."""
    ledger = _service().ledger
    item = _outbox_item(ledger, item_id)
    if not ledger.drop(item.key):
        raise click.ClickException(f"{item.key[:16]} was delivered or removed meanwhile")
    click.echo(f"dropped {item.key[:16]} ({item.state}, {item.tenant}/{item.backend})")


@click.command("users")
@click.argument("tenant", required=False)
@click.argument("backend", required=False)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per backend instead of a table.")
@with_appcontext
def users_command(tenant: str | None, backend: str | None, as_json: bool) -> None:
    """The users of each backend that has them (Odoo, Pipedrive, HubSpot; SQL with users_query, REST
    with a users request): the id to enter as a phone user's CRM user id (userCrmId) in the portal."""
    service = _service()
    tenants = [_tenant(service, tenant)] if tenant or len(service.tenants) == 1 else service.tenants
    failed = False
    shown = 0
    for current in tenants:
        slots = [s for s in current.slots if backend in (None, s.name)]
        if backend is not None and not slots:
            raise click.ClickException(f"tenant {current.name!r} has no backend named {backend!r}")
        for slot in slots:
            if not slot.lists_users:
                if backend is not None:
                    raise click.ClickException(f"backend {slot.name!r} of tenant {current.name!r} has no users "
                                               "to list (see its documentation: users_query, users request)")
                continue
            shown += 1
            try:
                users = slot.backend.list_users()
            except BackendError as exc:
                failed = True
                click.echo(f"{current.name}/{slot.name}: cannot list users: {exc}", err=True)
                continue
            if as_json:
                click.echo(json.dumps({"tenant": current.name, "backend": slot.name, "users": [
                    {"id": u.id, "name": u.name, "email": u.email} for u in users]}, ensure_ascii=False))
                continue
            click.echo(f"{current.name}/{slot.name} ({slot.crm_name or slot.spec.type}): {len(users)} user(s)")
            rows = [(str(u.id), u.name or "", u.email or "") for u in users]
            widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(("id", "name", "email"))]
            for row in [("id", "name", "email"), *rows]:
                click.echo("  " + "  ".join(value.ljust(widths[i]) for i, value in enumerate(row)).rstrip())
    if not shown:
        click.echo("no backend with users is configured (odoo, pipedrive, hubspot; sql with users_query; "
                   "rest with a users request)", err=True)
    if failed:
        sys.exit(1)
