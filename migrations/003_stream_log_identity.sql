-- 003: change-log identity (data-safety issue, case 4). Conventions as in 001.
-- A change's number (epoch, seq) is unique only within one change log. A primary whose state was lost (or replaced by
-- another database) numbers its namespace's changes from 1 again at the same epoch, so a replica must know which log
-- its position is in: each primary's log gets a random id when it is first needed, sent with every stream line and
-- snapshot; the replica keys its position and its applied records by it. '' stands for "no log id": a position taken
-- before this migration, or from a primary that sends none.

-- At a primary: the identity of this site's change log of each namespace. Created once, never changed: a new id means
-- a new log (a new database), which replicas must not continue from.
CREATE TABLE stream_logs (
  namespace  TEXT    NOT NULL PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
  log_id     TEXT    NOT NULL CHECK (length(log_id) = 36),
  created_at INTEGER NOT NULL
) STRICT;

-- At a replica: the log the position is in.
ALTER TABLE replica_positions ADD COLUMN log_id TEXT NOT NULL DEFAULT '' CHECK (log_id = '' OR length(log_id) = 36);

-- applied_changes re-keyed by source and log: (epoch, seq) alone can name two different changes.
CREATE TABLE applied_changes_v3 (
  namespace   TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  source_site TEXT    NOT NULL,
  log_id      TEXT    NOT NULL DEFAULT '' CHECK (log_id = '' OR length(log_id) = 36),
  epoch       INTEGER NOT NULL CHECK (epoch >= 0),
  seq         INTEGER NOT NULL CHECK (seq >= 1),
  kind        TEXT    NOT NULL,
  key_id      TEXT,
  outcome     TEXT    NOT NULL CHECK (outcome IN ('applied', 'present', 'catchup')),
  applied_at  INTEGER NOT NULL,
  PRIMARY KEY (namespace, source_site, log_id, epoch, seq)
) STRICT, WITHOUT ROWID;

INSERT INTO applied_changes_v3 (namespace, source_site, log_id, epoch, seq, kind, key_id, outcome, applied_at)
  SELECT namespace, source_site, '', epoch, seq, kind, key_id, outcome, applied_at FROM applied_changes;

-- Records a position no longer covers (a snapshot moved it back before this migration) would describe changes the
-- device may not reflect: they go.
DELETE FROM applied_changes_v3 WHERE EXISTS (
  SELECT 1 FROM replica_positions p
  WHERE p.namespace = applied_changes_v3.namespace AND p.source_site = applied_changes_v3.source_site
    AND (p.epoch IS NULL OR applied_changes_v3.epoch > p.epoch OR (applied_changes_v3.epoch = p.epoch AND applied_changes_v3.seq > p.seq)));

DROP INDEX applied_changes_applied_at;
DROP TABLE applied_changes;
ALTER TABLE applied_changes_v3 RENAME TO applied_changes;
CREATE INDEX applied_changes_applied_at ON applied_changes (applied_at);
