-- 011: an administrator restore still owed to a namespace this site became primary of (docs/state.md; failover.ts
-- promote, resumeLeadership; admin-restorer.ts). Written in the same transaction as the role change that owes it,
-- deleted once the namespace's administrators are back on the device (or the role it was owed under is superseded).
-- A row left behind (the NetHSM refused or failed the restore, a crash) is retried by the daemon and at its start.
-- `epoch`: the namespace's epoch when the role change was decided; the retry carries that role row's fencing token.
-- `kind`: `promote` (administrators from `source`, a snapshot) or `resume` (every user from `source`, a fence's
-- quarantine file). `source`: the file path. `attempts`, `last_error`: the retries so far and why the last failed (an
-- error message: public, no secret). No CHECK on the values: the repository validates them on read (a bad row is
-- kept, reported in status and never acted on). Conventions as in 001.
CREATE TABLE admin_restores (
  namespace  TEXT    NOT NULL PRIMARY KEY,
  epoch      INTEGER NOT NULL,
  kind       TEXT    NOT NULL,
  source     TEXT    NOT NULL,
  created_at INTEGER NOT NULL,
  attempts   INTEGER NOT NULL DEFAULT 0,
  last_error TEXT
);
