"""The mirror owns the sync schedule: a source only answers ``sync(cursor)`` (everything when the
cursor is None); when to list everything again is decided in crm_backends/mirror.py alone."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from crm_backends.base import Backend, BackendSpec
from crm_backends.mirror import MirroredBackend
from lookup_core.errors import BackendUnavailable
from lookup_core.phone import PhoneNumber, parse_number
from lookup_core.types import Contact, SyncBatch


class ScriptedSource(Backend):
    """A source whose listings the test scripts: a full listing (complete) without a cursor, the
    changed contacts after one. It records every cursor it is asked with."""

    type_name = "scripted-source"
    modes = frozenset({"mirror"})

    def __init__(self, spec: BackendSpec):
        super().__init__(spec)
        self.contacts = {"1": Contact(id="1", name="Anna Muster", phones=["+41 21 552 20 00"])}
        self.changed: list[Contact] = []
        self.asked: list[str | None] = []
        self.fail_next = False
        self.version = 0

    def lookup(self, number: PhoneNumber, limit: int) -> list[Contact]:
        raise AssertionError("a mirror answers from its copy")

    def sync(self, cursor: str | None) -> Iterator[SyncBatch]:
        self.asked.append(cursor)
        if self.fail_next:
            self.fail_next = False
            raise BackendUnavailable("the source is down")
        self.version += 1
        if cursor is None:
            yield SyncBatch(contacts=list(self.contacts.values()), cursor=f"v{self.version}", complete=True)
        else:
            yield SyncBatch(contacts=self.changed, cursor=f"v{self.version}")
            self.changed = []


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def make_mirror(tmp_path):
    mirrors: list[MirroredBackend] = []

    def make(**options) -> tuple[MirroredBackend, ScriptedSource, Clock]:
        spec = BackendSpec(tenant="t", name=f"s{len(mirrors)}", options=options, instance_dir=str(tmp_path))
        source = ScriptedSource(spec)
        clock = Clock()
        mirror = MirroredBackend(source, clock=clock)
        mirrors.append(mirror)
        return mirror, source, clock

    yield make
    for mirror in mirrors:
        mirror.close()


def kinds(source: ScriptedSource) -> list[str]:
    return ["full" if cursor is None else "incremental" for cursor in source.asked]


def test_full_at_first_then_incremental_then_full_every_full_sync_interval(make_mirror):
    mirror, source, clock = make_mirror(full_sync_interval=3600.0)
    for step in (0, 100, 3499, 1, 100, 100):  # a full listing at 0 and at 3600 s, not in between
        clock.now += step
        assert mirror.sync_now().ok
    assert kinds(source) == ["full", "incremental", "incremental", "full", "incremental", "incremental"]
    # an incremental sync goes on from the cursor of the sync before it
    assert source.asked[1:3] == ["v1", "v2"] and source.asked[4:] == ["v4", "v5"]


def test_an_incremental_listing_is_applied_and_a_full_one_removes_what_it_did_not_show(make_mirror):
    mirror, source, clock = make_mirror(full_sync_interval=3600.0)
    mirror.sync_now()
    source.changed = [Contact(id="2", name="Beat Keller", phones=["044 668 18 00"])]
    del source.contacts["1"]  # deleted at the source: an incremental listing cannot show it
    clock.now += 60
    outcome = mirror.sync_now()
    assert outcome.incremental and outcome.written == 1 and outcome.deleted == 0
    assert [c.name for c in mirror.lookup(parse_number("+41446681800"), 5)] == ["Beat Keller"]
    assert [c.id for c in mirror.lookup(parse_number("+41215522000"), 5)] == ["1"]
    clock.now += 3600
    outcome = mirror.sync_now()
    assert not outcome.incremental and outcome.deleted == 2  # "2" was never in the full listing either
    assert mirror.lookup(parse_number("+41215522000"), 5) == []


def test_full_sync_interval_zero_lists_everything_every_time(make_mirror):
    mirror, source, clock = make_mirror(full_sync_interval=0.0)
    for _ in range(3):
        clock.now += 60
        mirror.sync_now()
    assert kinds(source) == ["full", "full", "full"]


def test_full_sync_every_lists_everything_every_nth_sync(make_mirror):
    mirror, source, clock = make_mirror(full_sync_every=3)
    for _ in range(7):
        clock.now += 60
        mirror.sync_now()
    assert kinds(source) == ["full", "incremental", "incremental", "full", "incremental", "incremental", "full"]


def test_a_forced_full_sync_restarts_the_interval(make_mirror):
    mirror, source, clock = make_mirror(full_sync_interval=3600.0)
    mirror.sync_now()
    clock.now += 3000
    assert not mirror.sync_now(full=True).incremental
    clock.now += 1000  # 4000 s after the first full listing, 1000 s after the forced one
    assert mirror.sync_now().incremental
    assert kinds(source) == ["full", "full", "incremental"]


def test_a_failed_sync_changes_nothing_in_the_schedule(make_mirror):
    mirror, source, clock = make_mirror(full_sync_interval=3600.0)
    source.fail_next = True
    assert not mirror.sync_now().ok
    clock.now += 60
    assert mirror.sync_now().ok  # the failed first listing is tried again in full
    clock.now += 60
    source.fail_next = True
    assert not mirror.sync_now().ok
    clock.now += 60
    assert mirror.sync_now().ok
    assert kinds(source) == ["full", "full", "incremental", "incremental"]
    assert source.asked[2] == source.asked[3] == "v1"  # the cursor did not move on a failure


def test_a_source_may_answer_a_cursor_with_a_full_listing(make_mirror):
    """A source whose cursor expired (a refused sync token) lists everything instead; the mirror
    counts that as the full listing it is."""
    mirror, source, clock = make_mirror(full_sync_interval=3600.0)
    mirror.sync_now()
    original = source.sync

    def relist(cursor: str | None) -> Iterator[SyncBatch]:
        return original(None)

    source.sync = relist  # type: ignore[method-assign]
    clock.now += 3000
    assert not mirror.sync_now().incremental
    source.sync = original  # type: ignore[method-assign]
    clock.now += 3000  # 6000 s after the first listing but 3000 s after the relisting
    assert mirror.sync_now().incremental
