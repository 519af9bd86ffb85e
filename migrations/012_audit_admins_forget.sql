-- audit_log.action gains 'admins-forget': an operator dropped a pending administrator restore (`admins restore <ns>
-- --forget`) after putting the namespace's administrators back by hand. SQLite cannot alter a CHECK constraint, so the
-- table is rebuilt as in 004, keeping every row, its id, the index and the append-only triggers.
CREATE TABLE audit_log_v12 (
  id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  at         INTEGER NOT NULL,
  actor      TEXT    NOT NULL,
  action     TEXT    NOT NULL CHECK (action IN ('init', 'promote', 'demote', 'fence', 'follow', 'resync', 'split-brain', 'pause', 'resume', 'sync', 'quarantine-ack', 'admins-forget')),
  namespace  TEXT,
  from_epoch INTEGER,
  to_epoch   INTEGER,
  from_role  TEXT    CHECK (from_role IN ('primary', 'replica', 'fenced')),
  to_role    TEXT    CHECK (to_role IN ('primary', 'replica', 'fenced')),
  detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object')
) STRICT;
INSERT INTO audit_log_v12 (id, at, actor, action, namespace, from_epoch, to_epoch, from_role, to_role, detail)
  SELECT id, at, actor, action, namespace, from_epoch, to_epoch, from_role, to_role, detail FROM audit_log;
-- The triggers go with the table; DROP TABLE fires no DELETE trigger.
DROP TABLE audit_log;
ALTER TABLE audit_log_v12 RENAME TO audit_log;
CREATE INDEX audit_log_namespace_at ON audit_log (namespace, at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
