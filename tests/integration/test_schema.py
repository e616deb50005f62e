"""The database itself keeps the engine's promises: unique keys and checks refuse what code
must never write, the schema version is checked with a message that says what to run, and
times come back as the UTC moments that went in. Every test runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from helpers import TUESDAY_10AM
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.ext.asyncio import AsyncSession

from sequencer.core.errors import SchemaMismatch
from sequencer.store.database import Database, head_revision, open_database
from sequencer.store.models import (
    Base,
    Enrollment,
    Event,
    InboundMessage,
    Prospect,
    SequenceRecord,
    SequenceVersion,
    Suppression,
    Touch,
)

NOW = TUESDAY_10AM


def new_prospect(email: str, at: datetime = NOW) -> Prospect:
    return Prospect(email=email, fields={}, created_at=at, updated_at=at)


def new_enrollment(prospect_id: int, sequence_id: int, version_id: int, state: str) -> Enrollment:
    return Enrollment(
        prospect_id=prospect_id,
        sequence_id=sequence_id,
        version_id=version_id,
        owner="ana.reyes@northwind.example",
        state=state,
        created_at=NOW,
        updated_at=NOW,
    )


def new_touch(enrollment: Enrollment, step_id: str, step_index: int) -> Touch:
    return Touch(
        enrollment_id=enrollment.id,
        prospect_id=enrollment.prospect_id,
        step_id=step_id,
        step_index=step_index,
        channel="email",
        state="scheduled",
        due_at=NOW,
        attempts=0,
        created_at=NOW,
        updated_at=NOW,
    )


def new_inbound(uidvalidity: int, uid: int) -> InboundMessage:
    return InboundMessage(
        mailbox="ana.reyes@northwind.example",
        folder="INBOX",
        uidvalidity=uidvalidity,
        uid=uid,
        kind="human",
        details={},
        processed_at=NOW,
    )


async def seed(db: Database) -> Enrollment:
    """A prospect enrolled in a sequence, written straight through the models."""
    async with db.transaction() as s:
        person = new_prospect("dana@acme.example")
        record = SequenceRecord(name="cold-outbound", created_at=NOW)
        s.add_all([person, record])
        await s.flush()
        version = SequenceVersion(
            sequence_id=record.id,
            content_hash="0" * 64,
            content="steps: []",
            step_ids={"steps": ["intro", "follow-up"]},
            created_at=NOW,
        )
        s.add(version)
        await s.flush()
        enrollment = new_enrollment(person.id, record.id, version.id, "active")
        s.add(enrollment)
        await s.flush()
        s.add(new_touch(enrollment, "intro", 0))
    return enrollment


async def count(s: AsyncSession, model: type[Base]) -> int:
    return (await s.execute(select(func.count()).select_from(model))).scalar_one()


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    yield database
    await database.close()


# --- constraints ----------------------------------------------------------------------------


async def test_a_second_touch_for_the_same_step_is_refused(db: Database) -> None:
    enrollment = await seed(db)
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(new_touch(enrollment, "follow-up", 1))  # fine on its own...
            s.add(new_touch(enrollment, "intro", 0))  # ...but this step already has a touch
    async with db.transaction() as s:
        steps = (await s.execute(select(Touch.step_id))).scalars().all()
    # The whole transaction was refused, the valid row with it: nothing half-done.
    assert steps == ["intro"]
    async with db.transaction() as s:
        s.add(new_touch(enrollment, "follow-up", 1))
    async with db.transaction() as s:
        assert await count(s, Touch) == 2


async def test_one_live_enrollment_per_prospect_and_sequence(db: Database) -> None:
    first = await seed(db)
    ids = (first.prospect_id, first.sequence_id, first.version_id)
    for state in ("active", "paused"):
        with pytest.raises(IntegrityError):
            async with db.transaction() as s:
                s.add(new_enrollment(*ids, state))
    # Once the first one has stopped, the prospect may be enrolled again...
    async with db.transaction() as s:
        await s.execute(
            text("UPDATE enrollments SET state = 'stopped' WHERE id = :id"), {"id": first.id}
        )
        s.add(new_enrollment(*ids, "active"))
    # ...but still only once at a time, while finished and stopped ones may pile up.
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(new_enrollment(*ids, "paused"))
    async with db.transaction() as s:
        s.add(new_enrollment(*ids, "finished"))
        s.add(new_enrollment(*ids, "stopped"))
    async with db.transaction() as s:
        states = sorted((await s.execute(select(Enrollment.state))).scalars())
    assert states == ["active", "finished", "stopped", "stopped"]


async def test_an_unknown_enrollment_state_is_refused(db: Database) -> None:
    first = await seed(db)
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(new_enrollment(first.prospect_id, first.sequence_id, first.version_id, "zombie"))


async def test_the_same_inbound_message_is_recorded_once(db: Database) -> None:
    async with db.transaction() as s:
        s.add(new_inbound(uidvalidity=7, uid=41))
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(new_inbound(uidvalidity=7, uid=41))
    # The same UID under a new UIDVALIDITY is another message (the server renumbered).
    async with db.transaction() as s:
        s.add(new_inbound(uidvalidity=8, uid=41))
        s.add(new_inbound(uidvalidity=7, uid=42))
    async with db.transaction() as s:
        assert await count(s, InboundMessage) == 3


@pytest.mark.parametrize("email", ["Dana@acme.example", "DANA@ACME.EXAMPLE"])
async def test_a_prospect_email_must_be_lowercase(db: Database, email: str) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(new_prospect(email))
    async with db.transaction() as s:
        s.add(new_prospect(email.lower()))
    # Lowercase is the key: the same address in another case cannot sneak in twice.
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(new_prospect(email.lower()))


async def test_a_suppression_must_be_lowercase(db: Database) -> None:
    with pytest.raises(IntegrityError):
        async with db.transaction() as s:
            s.add(Suppression(value="@Acme.example", reason="manual", created_at=NOW))


# --- schema version -------------------------------------------------------------------------


async def test_an_empty_database_says_to_run_db_upgrade(empty_database_url: str) -> None:
    database = Database(empty_database_url)
    try:
        with pytest.raises(SchemaMismatch, match=r"no Sequencer tables.*`sequencer db upgrade`"):
            await database.check_schema()
    finally:
        await database.close()
    with pytest.raises(SchemaMismatch, match="sequencer db upgrade"):
        await open_database(empty_database_url)


async def test_a_database_from_a_newer_version_is_refused(db: Database) -> None:
    await db.check_schema()  # the fixture's database is current
    async with db.engine.begin() as connection:
        await connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaMismatch, match=r"created by a newer Sequencer \(schema 9999\)"):
        await db.check_schema()


async def test_upgrade_downgrade_upgrade(empty_database_url: str) -> None:
    database = Database(empty_database_url)

    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    def columns(connection: Connection) -> dict[str, set[str]]:
        inspector = inspect(connection)
        return {
            name: {c["name"] for c in inspector.get_columns(name)}
            for name in inspector.get_table_names()
        }

    declared = {
        name: {c.name for c in table.columns} for name, table in Base.metadata.tables.items()
    }
    try:
        await database.upgrade()
        await database.check_schema()
        assert await database.current_revision() == head_revision()
        async with database.engine.connect() as connection:
            found = await connection.run_sync(columns)
        # The migration builds exactly the tables and columns the models declare.
        assert found.pop("alembic_version") == {"version_num"}
        assert found == declared

        await database.downgrade("base")
        async with database.engine.connect() as connection:
            assert await connection.run_sync(tables) <= {"alembic_version"}
        with pytest.raises(SchemaMismatch, match="sequencer db upgrade"):
            await database.check_schema()

        await database.upgrade()
        await database.check_schema()
        async with database.transaction() as s:
            s.add(new_prospect("dana@acme.example"))
        async with database.transaction() as s:
            assert await count(s, Prospect) == 1
    finally:
        await database.close()


# --- times ----------------------------------------------------------------------------------


async def test_times_round_trip_as_aware_utc(db: Database) -> None:
    kolkata = datetime(2025, 3, 4, 20, 45, 12, 345678, tzinfo=ZoneInfo("Asia/Kolkata"))
    async with db.transaction() as s:
        s.add(new_prospect("dana@acme.example", at=kolkata))
    async with db.transaction() as s:
        stored = (await s.execute(select(Prospect))).scalar_one()
    for moment in (stored.created_at, stored.updated_at):
        assert moment == kolkata
        assert moment.utcoffset() == timedelta(0)
        assert moment.replace(tzinfo=None) == datetime(2025, 3, 4, 15, 15, 12, 345678)


async def test_times_in_different_zones_compare_as_instants(db: Database) -> None:
    enrollment = await seed(db)
    # By wall clock Paris (15:30) is last; as instants it falls between the other two:
    # 12:00 UTC, then 14:30 UTC (Paris), then 15:00 UTC (10:00 in New York).
    moments = {
        "new-york": datetime(2025, 3, 4, 10, 0, tzinfo=ZoneInfo("America/New_York")),
        "utc": datetime(2025, 3, 4, 12, 0, tzinfo=UTC),
        "paris": datetime(2025, 3, 4, 15, 30, tzinfo=ZoneInfo("Europe/Paris")),
    }
    async with db.transaction() as s:
        for name, at in moments.items():
            s.add(Event(prospect_id=enrollment.prospect_id, kind=name, at=at, data={}))
    async with db.transaction() as s:
        ordered = (await s.execute(select(Event.kind).order_by(Event.at))).scalars().all()
        later = (
            await s.execute(
                select(Event.kind).where(Event.at > datetime(2025, 3, 4, 14, 0, tzinfo=UTC))
            )
        ).scalars()
    assert ordered == ["utc", "paris", "new-york"]
    assert set(later) == {"paris", "new-york"}


async def test_naive_times_are_refused(db: Database) -> None:
    with pytest.raises(StatementError, match="naive datetime"):
        async with db.transaction() as s:
            s.add(new_prospect("dana@acme.example", at=datetime(2025, 3, 4, 10, 0)))
    async with db.transaction() as s:
        assert await count(s, Prospect) == 0
