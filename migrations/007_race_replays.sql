-- Racing writes re-applied after a merge-restore (docs/concurrency.md, "Racing writes re-applied").
-- Written in the exclusive hold BEFORE the restore of a merge that writes logged here raced; deleted once they are
-- re-applied. A row left by a crash between the two is finished at start-up before the gateway admits writes.
CREATE TABLE race_replays (
  namespace  TEXT    NOT NULL PRIMARY KEY,   -- a namespace this site is primary of
  from_seq   INTEGER NOT NULL,               -- its change log is re-applied from this seq to its head
  created_at INTEGER NOT NULL
);
