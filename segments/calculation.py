"""Set-based membership changes: the SQL behind full recalculation, bulk adds and removals, tiers.

A full recalculation is one statement: the new member set (the compiled rules), the diff against
the open memberships (joined / left / rescored), the history rows closed and opened, and one
outbox event per changed member, all inside the caller's transaction. The events are written by
`customers.events.record_from_rows` (envelope, redaction, timeline entries, schema check), in the
same statement. Nothing here loops over customers in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection

from customers import events
from customers.events import RowEvents
from segments import events as segment_events


def tune_transaction() -> None:
    """For the rest of the transaction: memory for the hash joins and aggregates of set-based work
    (no spilling to disk), and no JIT (compiling these plans costs more than it saves)."""
    work_mem = str(getattr(settings, "SEGMENTS_CALCULATION_WORK_MEM", "64MB"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('work_mem', %s, true), set_config('jit', 'off', true)", [work_mem])


@dataclass(frozen=True)
class Diff:
    joined: int
    left: int
    rescored: int
    member_count: int


def _assigned_events(rows: str, *, segment, source: str, now: datetime, restricted: str | None = None) -> RowEvents:
    """customer.segment.assigned.v1 for each row of `rows` (customer_id, score)."""
    return RowEvents(
        event_type=segment_events.SEGMENT_ASSIGNED,
        rows=rows,
        subject="r.customer_id",
        data="""jsonb_build_object(
            'customer_id', r.customer_id::text, 'segment_id', %s::text, 'segment_code', %s::text,
            'source', %s::text, 'score', r.score, 'joined_at', %s::text)""",
        params=[str(segment.id), segment.code, source, now.isoformat()],
        restricted=restricted,
    )


def _removed_events(rows: str, *, segment, reason: str, now: datetime) -> RowEvents:
    """customer.segment.removed.v1 for each row of `rows` (customer_id, source); a processing-restricted
    customer's event is cut to identifiers by `customers.events`."""
    return RowEvents(
        event_type=segment_events.SEGMENT_REMOVED,
        rows=rows,
        subject="r.customer_id",
        data="""jsonb_build_object(
            'customer_id', r.customer_id::text, 'segment_id', %s::text, 'segment_code', %s::text,
            'source', r.source, 'reason', %s::text, 'left_at', %s::text)""",
        params=[str(segment.id), segment.code, reason, now.isoformat()],
    )


def apply_full_recalculation(
    *, segment, members_sql: str, members_params: list, now: datetime, actor, among: list | None = None
) -> Diff:
    """Make the open memberships of `segment` exactly the rows of `members_sql` (columns: id, score).

    Joined rows are opened, left rows closed (`left_at`), the score of staying members updated;
    events for every joined and left member go to the outbox in the same statement.

    `among` (customer ids) limits the diff to those customers (a batch of incremental evaluations;
    `members_sql` then selects among them only). Such a batch runs beside other evaluations of the
    same customers, so a membership another transaction opened or closed meanwhile is left as it
    is and not announced twice; a full recalculation holds the segment exclusively and needs neither
    guard (nor pays for them).

    The plan must not depend on fresh statistics (a new segment's rows are unknown to them): the
    diff is one FULL JOIN (hash or merge, never a nested loop) and the rows to close are found
    by primary key, so a wrong row estimate cannot turn the statement quadratic.
    """
    guarded = among is not None
    among_only = "AND customer_id = ANY(%s::uuid[])" if guarded else ""
    still_open = "AND m.left_at IS NULL" if guarded else ""
    unless_opened = "ON CONFLICT (segment_id, customer_id) WHERE left_at IS NULL DO NOTHING" if guarded else ""
    current_params = [segment.id, [str(item) for item in among]] if guarded else [segment.id]
    ctes = f"""
    target AS MATERIALIZED ({members_sql}),
    current_members AS MATERIALIZED (
        SELECT id AS membership_id, customer_id, score
        FROM segments_segmentmembership WHERE segment_id = %s AND left_at IS NULL {among_only}
    ),
    diff AS MATERIALIZED (
        SELECT c.membership_id, COALESCE(t.id, c.customer_id) AS customer_id, t.score AS new_score,
               t.id IS NULL AS leaving, c.customer_id IS NULL AS joining
        FROM target t FULL JOIN current_members c ON c.customer_id = t.id
        WHERE t.id IS NULL OR c.customer_id IS NULL OR c.score <> t.score
    ),
    closed AS (
        UPDATE segments_segmentmembership AS m SET left_at = %s
        WHERE m.id = ANY(ARRAY(SELECT membership_id FROM diff WHERE leaving)) {still_open}
        RETURNING m.customer_id, m.source
    ),
    opened AS (
        INSERT INTO segments_segmentmembership (customer_id, segment_id, joined_at, left_at, score, source, added_by)
        SELECT d.customer_id, %s, %s, NULL, d.new_score, 'rule', ''
        FROM diff d WHERE d.joining
        ORDER BY d.customer_id  -- index order: the new index entries land next to each other
        {unless_opened}
        RETURNING customer_id, score
    ),
    rescored AS (
        UPDATE segments_segmentmembership AS m SET score = d.new_score
        FROM diff d
        WHERE NOT d.leaving AND NOT d.joining AND m.id = d.membership_id {still_open}
        RETURNING 1
    )"""  # noqa: S608 - the member query is compiled by Django, values are parameters
    joined, left, rescored, member_count = events.record_from_rows(
        ctes=ctes,
        params=[*members_params, *current_params, now, segment.id, now],
        events=[
            # The members are eligible customers (the compiled rules say so): none is restricted.
            _assigned_events("opened", segment=segment, source="rule", now=now, restricted="false"),
            _removed_events("closed", segment=segment, reason=segment_events.LEFT_RULES, now=now),
        ],
        select="SELECT (SELECT count(*) FROM opened), (SELECT count(*) FROM closed), "
        "(SELECT count(*) FROM rescored), (SELECT count(*) FROM target)",
        actor=actor,
    )
    return Diff(joined=joined, left=left, rescored=rescored, member_count=member_count)


def open_memberships(*, segment, customer_ids: list, source: str, now: datetime, actor) -> list:
    """Open a membership for each customer without one (static segments); returns who joined."""
    if not customer_ids:
        return []
    ctes = """
    opened AS (
        INSERT INTO segments_segmentmembership (customer_id, segment_id, joined_at, left_at, score, source, added_by)
        SELECT DISTINCT ids.id, %s::uuid, %s::timestamptz, NULL::timestamptz, 0, %s, %s
        FROM unnest(%s::uuid[]) AS ids(id)
        WHERE NOT EXISTS (
            SELECT 1 FROM segments_segmentmembership m
            WHERE m.segment_id = %s AND m.customer_id = ids.id AND m.left_at IS NULL
        )
        ON CONFLICT (segment_id, customer_id) WHERE left_at IS NULL DO NOTHING
        RETURNING customer_id, score
    )"""
    params = [
        segment.id,
        now,
        source,
        actor.label if actor else "",
        [str(item) for item in customer_ids],
        segment.id,
    ]
    (joined,) = events.record_from_rows(
        ctes=ctes,
        params=params,
        events=[_assigned_events("opened", segment=segment, source=source, now=now)],
        select="SELECT coalesce(array_agg(customer_id), '{}') FROM opened",
        actor=actor,
    )
    return list(joined)


def close_memberships(
    *,
    segment,
    customer_ids: list | None,
    reason: str,
    now: datetime,
    actor,
    keeping: list | None = None,
    keeping_query: tuple[str, list] | None = None,
) -> list:
    """Close the open memberships of the customers (all members when `customer_ids` is None), except
    those of the customers in `keeping` (a replacing import) or selected by `keeping_query` (SQL and
    parameters of a query of customer ids, e.g. those consenting): one statement however many leave."""
    who = "" if customer_ids is None else "AND m.customer_id = ANY(%s::uuid[])"
    if keeping is not None:
        who += " AND NOT (m.customer_id = ANY(%s::uuid[]))"
    if keeping_query is not None:
        who += f" AND m.customer_id NOT IN ({keeping_query[0]})"
    ctes = f"""
    closed AS (
        UPDATE segments_segmentmembership AS m SET left_at = %s
        WHERE m.segment_id = %s AND m.left_at IS NULL {who}
        RETURNING m.customer_id, m.source
    )"""  # noqa: S608 - identifiers are ours, values are parameters
    params: list[Any] = [now, segment.id]
    if customer_ids is not None:
        if not customer_ids:
            return []
        params.append([str(item) for item in customer_ids])
    if keeping is not None:
        params.append([str(item) for item in keeping])
    if keeping_query is not None:
        params += list(keeping_query[1])
    (left,) = events.record_from_rows(
        ctes=ctes,
        params=params,
        events=[_removed_events("closed", segment=segment, reason=reason, now=now)],
        select="SELECT coalesce(array_agg(customer_id), '{}') FROM closed",
        actor=actor,
    )
    return list(left)
