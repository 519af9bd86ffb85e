-- 001: the daemon's state (daemon issue). Conventions for every migration:
--   * one file per version, NNN_name.sql, applied in order at open, each in its own transaction, recorded in
--     schema_migrations; never edit a released file (its checksum is recorded): add the next number instead;
--   * no BEGIN/COMMIT/PRAGMA inside a file; STRICT tables; times are INTEGER milliseconds since the Unix epoch (UTC);
--   * nothing secret is ever stored: no passphrases, tokens or key material (detail columns hold codes and ids only).
-- The streaming issue adds change_log, intents and applied_changes in its own migration (see docs/state.md).

-- Role of this site for each namespace it replicates. One row per configured namespace.
CREATE TABLE namespaces (
  name         TEXT    NOT NULL PRIMARY KEY,
  role         TEXT    NOT NULL CHECK (role IN ('primary', 'replica', 'fenced')),
  epoch        INTEGER NOT NULL CHECK (epoch >= 0),
  -- The site that is primary at `epoch` as far as this site knows (this site's own name when primary or demoted).
  primary_site TEXT    NOT NULL,
  -- Operator pause (admin API): scheduled syncs skip the namespace while set.
  paused       INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
  created_at   INTEGER NOT NULL,
  updated_at   INTEGER NOT NULL
) STRICT;

-- Every (epoch, primary) this site has learned of, per namespace: the epoch history. The primary key makes
-- "two primaries for one epoch" impossible to record.
CREATE TABLE epochs (
  namespace    TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  epoch        INTEGER NOT NULL CHECK (epoch >= 0),
  primary_site TEXT    NOT NULL,
  -- Who told us: 'config' (initial epoch), 'local' (a promote here) or a peer's site name.
  learned_from TEXT    NOT NULL,
  learned_at   INTEGER NOT NULL,
  PRIMARY KEY (namespace, epoch)
) STRICT, WITHOUT ROWID;

-- Where each replica namespace stands relative to a source (the primary site it replicates from).
-- Position (epoch, seq): seq is 0 for snapshots until the streaming issue numbers changes.
CREATE TABLE replica_positions (
  namespace             TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  source_site           TEXT    NOT NULL,
  -- NULL until the first successful sync.
  epoch                 INTEGER CHECK (epoch >= 0),
  seq                   INTEGER CHECK (seq >= 0),
  -- The last snapshot applied: its id (manifest) and SHA-256 digest, and when the primary took it (lag basis).
  snapshot_id           TEXT,
  snapshot_digest       TEXT,
  position_taken_at     INTEGER,
  -- The last sync attempt, successful or not.
  last_sync_at          INTEGER,
  last_sync_outcome     TEXT    CHECK (last_sync_outcome IN ('ok', 'failed')),
  last_sync_duration_ms INTEGER CHECK (last_sync_duration_ms >= 0),
  last_error_code       TEXT,
  last_ok_at            INTEGER,
  updated_at            INTEGER NOT NULL,
  CHECK ((epoch IS NULL) = (seq IS NULL)),
  PRIMARY KEY (namespace, source_site)
) STRICT, WITHOUT ROWID;

-- Members (this site's NetHSM, each peer daemon), by the names MemberMonitor gives them: Luna-style auto-recovery state.
CREATE TABLE member_health (
  member               TEXT    NOT NULL PRIMARY KEY,
  status               TEXT    NOT NULL CHECK (status IN ('ok', 'unreachable', 'recovering', 'fenced')),
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

-- Append-only record of every role change and operator action. No foreign key: the history outlives a namespace.
CREATE TABLE audit_log (
  id         INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
  at         INTEGER NOT NULL,
  -- 'daemon', or the operator as 'user@host' / 'uid:1000' from the admin socket.
  actor      TEXT    NOT NULL,
  action     TEXT    NOT NULL CHECK (action IN ('init', 'promote', 'demote', 'fence', 'follow', 'resync', 'split-brain', 'pause', 'resume', 'sync')),
  namespace  TEXT,
  from_epoch INTEGER,
  to_epoch   INTEGER,
  from_role  TEXT    CHECK (from_role IN ('primary', 'replica', 'fenced')),
  to_role    TEXT    CHECK (to_role IN ('primary', 'replica', 'fenced')),
  -- JSON object, never a secret (codes, ids, paths, reasons).
  detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object')
) STRICT;

CREATE INDEX audit_log_namespace_at ON audit_log (namespace, at);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
  SELECT RAISE(ABORT, 'audit_log is append-only');
END;
