-- 004: what status must be able to say (status-truth issue). Conventions as in 001.
-- 1. A NetHSM that answers but is Locked (or Unprovisioned/Failed) is not "unreachable": member_health.status gains
--    'locked' and 'not-operational'. SQLite cannot change a CHECK in place, so the table is rebuilt (same columns).
-- 2. Quarantine files an operator has looked at: one row per acknowledged file in <stateDir>/quarantine/, by its file
--    name (never a path). The file itself stays where the daemon wrote it: fences and syncs find it by its path in the
--    audit log. Until a file has a row here, `status` reports it and the unacknowledged-files gauge counts it.
-- 3. The audit log records the acknowledgement: its action CHECK gains 'quarantine-ack'. Rebuilt with every row and
--    id, and the append-only triggers.

CREATE TABLE member_health_v4 (
  member               TEXT    NOT NULL PRIMARY KEY,
  status               TEXT    NOT NULL CHECK (status IN ('ok', 'unreachable', 'locked', 'not-operational', 'recovering', 'fenced')),
  consecutive_failures INTEGER NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
  attempts             INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  gave_up              INTEGER NOT NULL DEFAULT 0 CHECK (gave_up IN (0, 1)),
  last_error_code      TEXT,
  -- The error's message: by the error registry's contract it never holds a secret.
  last_error           TEXT,
  last_ok_at           INTEGER,
  next_retry_at        INTEGER,
  updated_at           INTEGER NOT NULL
) STRICT;
INSERT INTO member_health_v4 SELECT member, status, consecutive_failures, attempts, gave_up, last_error_code, last_error,
  last_ok_at, next_retry_at, updated_at FROM member_health;
DROP TABLE member_health;
ALTER TABLE member_health_v4 RENAME TO member_health;

CREATE TABLE quarantine_acks (
  -- The file's name in quarantine/ (no directory part; checked again by the daemon before the row is written).
  file     TEXT    NOT NULL PRIMARY KEY CHECK (length(file) BETWEEN 1 AND 255 AND instr(file, '/') = 0 AND file NOT IN ('.', '..')),
  acked_at INTEGER NOT NULL,
  -- The operator, as in audit_log.actor.
  actor    TEXT    NOT NULL
) STRICT;

CREATE TABLE audit_log_v4 (
  id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  at         INTEGER NOT NULL,
  actor      TEXT    NOT NULL,
  action     TEXT    NOT NULL CHECK (action IN ('init', 'promote', 'demote', 'fence', 'follow', 'resync', 'split-brain', 'pause', 'resume', 'sync', 'quarantine-ack')),
  namespace  TEXT,
  from_epoch INTEGER,
  to_epoch   INTEGER,
  from_role  TEXT    CHECK (from_role IN ('primary', 'replica', 'fenced')),
  to_role    TEXT    CHECK (to_role IN ('primary', 'replica', 'fenced')),
  detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object')
) STRICT;
INSERT INTO audit_log_v4 (id, at, actor, action, namespace, from_epoch, to_epoch, from_role, to_role, detail)
  SELECT id, at, actor, action, namespace, from_epoch, to_epoch, from_role, to_role, detail FROM audit_log;
-- The triggers go with the table; DROP TABLE fires no DELETE trigger.
DROP TABLE audit_log;
ALTER TABLE audit_log_v4 RENAME TO audit_log;
CREATE INDEX audit_log_namespace_at ON audit_log (namespace, at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
