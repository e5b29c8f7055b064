"""PostgreSQL: `audit_append(halves)` chains and stores a batch of audit events in one statement

The server's reads appended their events in two round trips: the chain lock and the last
event, then (once the worker had chained the rows and hashed them) the insert and the commit.
The chain lock, which every append of every worker waits for, was held across the worker's
turn in between: sampled during 8 concurrent profile reads, a transaction holding it sat
idle waiting for its worker a quarter of the time. This function takes the lock, reads the
last event, chains the batch and inserts it in one statement, so that the lock is held only
for that statement and its commit.

An event's hash is SHA-256 over the previous hash and the event's canonical content (JSON,
keys sorted), whose only part unknown before the lock is taken is the event's id: each event
comes as the two parts of its content either side of it, and the function hashes
prev_hash || head || id || tail, as `credit_hub.audit.service` does in Python (and `audit
verify` checks), and stores the row read from that very content. The columns are those of
`audit_event` as of this revision: a migration that changes them replaces this function too.
Nothing on SQLite, where the writer holding the database's write lock chains its rows itself.

Revision ID: f3a9d2c7b814
Revises: e2b7c4f91a58
Create Date: 2026-11-26 19:30:00+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "f3a9d2c7b814"
down_revision: str | None = "e2b7c4f91a58"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# pg_advisory_xact_lock's key: 0x63726564, "cred", as audit.service._LOCK_KEY.
CREATE = """
CREATE FUNCTION audit_append(halves json) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    last_id bigint;
    last_hash text;
    pair json;
    content text;
    contents text[] := '{}';
    prevs text[] := '{}';
    hashes text[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(1668441444);
    SELECT id, hash INTO last_id, last_hash FROM audit_event ORDER BY id DESC LIMIT 1;
    IF NOT FOUND THEN
        last_id := 0;
        last_hash := repeat('0', 64);
    END IF;
    FOR pair IN SELECT json_array_elements(halves) LOOP
        last_id := last_id + 1;
        content := (pair ->> 0) || last_id || (pair ->> 1);
        prevs := prevs || last_hash;
        last_hash := encode(sha256(convert_to(last_hash || content, 'UTF8')), 'hex');
        contents := contents || content;
        hashes := hashes || last_hash;
    END LOOP;
    -- Each row is read from the content hashed. A payload of None is JSON null there, which
    -- the record type reads as SQL NULL: stored as JSON null, as SQLAlchemy stores it.
    INSERT INTO audit_event (
        id, at, actor_id, actor_kind, action, subject_id, record_id, submission_id, purpose,
        case_ref, request_id, result, payload, prev_hash, hash
    )
    SELECT e.id, e.at, e.actor_id, e.actor_kind, e.action, e.subject_id, e.record_id,
           e.submission_id, e.purpose, e.case_ref, e.request_id, e.result,
           coalesce(e.payload, 'null'), prevs[c.n], hashes[c.n]
    FROM unnest(contents) WITH ORDINALITY AS c(content, n),
         json_populate_record(NULL::audit_event, c.content::json) AS e;
END
$$
"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(CREATE)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION audit_append(json)")
