-- 013: an anti-entropy pass a replica queued after its primary's daemon restarted and that has not completed yet
-- (src/daemon/restart-pass.ts; `replication.afterPrimaryRestart: stream`). It stands in for the snapshot sync that
-- would find writes made straight to the primary's NetHSM around its daemon; kept in memory only, a stop of this
-- daemon forgot it (the primary answers as `ok` at the next start: no restart is seen again), so neither pass nor
-- snapshot ran. Written when the pass is queued, deleted when it completes or is dropped (this site no longer
-- replicates the namespace from `primary_site`); queued again at the daemon's start. Conventions as in 001.
CREATE TABLE restart_passes (
  namespace    TEXT    NOT NULL PRIMARY KEY,
  primary_site TEXT    NOT NULL,
  queued_at    INTEGER NOT NULL
);
