"""The per-tenant hash chain of audit records: append one, and verify the whole chain.

Each record's hash is SHA-256 (hex) over the previous record's hash followed by the record's
canonical JSON, both as UTF-8; the first record follows GENESIS. Appending is one statement that
advances the chain head (`audit_chain`, one row) and inserts the record: the head's row lock
orders concurrent appends and is held until the appending transaction ends, so the order of
sequence numbers is the order of the chain. Writes append last in their own transaction, so the
lock is held only for the commit. The hash is computed by PostgreSQL (`sha256`, built in since
11) in that statement; the verifier recomputes it in Python, independently.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime

from django.db import connection

GENESIS = "0" * 64

_APPEND = """
WITH {settings}head AS (
    UPDATE audit_chain
       SET seq = seq + 1, prev_hash = hash,
           hash = encode(sha256(convert_to(hash || %(event)s, 'UTF8')), 'hex')
     WHERE id = 1
 RETURNING seq, prev_hash, hash
)
INSERT INTO audit_record
       (seq, event_id, recorded, patients, action, subtype, outcome, client_id, agent, event, prev_hash, hash)
SELECT head.seq, %(event_id)s, %(recorded)s, %(patients)s, %(action)s, %(subtype)s, %(outcome)s,
       %(client_id)s, %(agent)s, %(event)s, head.prev_hash, head.hash
  FROM head{settings_join}
RETURNING seq
"""
# A read's record is this one statement, its own transaction in autocommit mode: one round trip.
# set_config(..., true) lasts until that transaction's commit, which then does not wait for the
# WAL flush; the CROSS JOIN makes PostgreSQL evaluate it.
_APPEND_ALONE = _APPEND.format(
    settings="unsynced AS (SELECT set_config('synchronous_commit', 'off', true)),\n",
    settings_join=" CROSS JOIN unsynced",
)
_APPEND_IN_TRANSACTION = _APPEND.format(settings="", settings_join="")


@dataclass(frozen=True)
class Record:
    """One AuditEvent and the columns searched on, copied from it."""

    event_id: str
    recorded: datetime
    patients: list[str]
    action: str
    subtype: str
    outcome: int
    client_id: str
    agent: str
    event: str  # canonical JSON


def append(record: Record) -> int:
    """Append to the current tenant's chain; returns the record's sequence number.

    Inside a transaction (a write and its record) the record commits with the write. Alone (a
    read, search or refusal) it commits in its own transaction with `synchronous_commit` off:
    the commit is in the WAL buffers before the response goes out, so a crash of the server
    process loses nothing, and a crash of PostgreSQL itself may lose the last few hundred
    milliseconds of read records (3 x wal_writer_delay). Waiting for the disk flush instead
    doubled the latency of a read, and the chain head would hold every other request of the
    tenant through that flush."""
    if connection.in_atomic_block:
        return _append(record, _APPEND_IN_TRANSACTION)
    return _append(record, _APPEND_ALONE)


def _append(record: Record, statement: str) -> int:
    params = {**record.__dict__}
    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        row = cursor.fetchone()
        if row is None:  # first record of this tenant: no head yet
            cursor.execute(
                "INSERT INTO audit_chain (id, seq, prev_hash, hash) VALUES (1, 0, '', %s)"
                " ON CONFLICT (id) DO NOTHING",
                [GENESIS],
            )
            cursor.execute(statement, params)
            row = cursor.fetchone()
    return row[0]


def link_hash(prev_hash: str, event: str) -> str:
    return hashlib.sha256((prev_hash + event).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Verdict:
    count: int
    broken_at: int | None = None  # sequence number of the first bad record
    reason: str = ""


def verify(batch: int = 1000) -> Verdict:
    """Walk the current tenant's chain up to its head: every sequence number present once, each
    record linked to the one before and hashed right, and the head naming the last record (so
    removing the newest records is found too). Records appended meanwhile are left for next time."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT seq, hash FROM audit_chain WHERE id = 1")
        head_seq, head_hash = cursor.fetchone() or (0, GENESIS)
    expected_seq, prev_hash = 1, GENESIS
    for seq, event, stored_prev, stored_hash in _records(head_seq, batch):
        if seq != expected_seq:
            return Verdict(expected_seq - 1, expected_seq, f"record {expected_seq} is missing")
        if stored_prev != prev_hash:
            return Verdict(seq - 1, seq, "prev_hash is not the hash of the record before")
        if link_hash(stored_prev, event) != stored_hash:
            return Verdict(seq - 1, seq, "hash does not match the record's content")
        expected_seq, prev_hash = seq + 1, stored_hash
    if expected_seq - 1 != head_seq:
        return Verdict(expected_seq - 1, expected_seq, f"record {expected_seq} is missing")
    if prev_hash != head_hash:
        return Verdict(head_seq, head_seq, "the chain head's hash is not the last record's")
    return Verdict(head_seq)


def _records(last: int, batch: int) -> Iterator[tuple[int, str, str, str]]:
    after = 0
    while True:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT seq, event, prev_hash, hash FROM audit_record WHERE seq > %s AND seq <= %s"
                " ORDER BY seq LIMIT %s",
                [after, last, batch],
            )
            rows = cursor.fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]
