-- 009: a pending re-apply of racing writes (007) keeps the epoch it was recorded at, and whether a fence exported the
-- namespace without them (docs/concurrency.md, "Racing writes re-applied").
-- `epoch`: the namespace's epoch when the restore erased the writes. The replay reads THAT epoch's change log from
-- from_seq to that epoch's head, so a record kept across an epoch change of a namespace still primary here (an etcd
-- lease lapsed and re-acquired, `promote --force` here) is finished instead of refused. Existing rows: the namespace's
-- current epoch (they were recorded under it: nothing but a replay or a fence ends a record). A row of a namespace this
-- site no longer knows gets NULL, which the repository refuses on read (kept, shown in status; never replayed).
-- `unexported_in`: the quarantine file a fence exported the namespace to while these writes could not be re-applied
-- (the device refused): they are NOT in it. NULL otherwise. The row stays (and keeps its changes retained in the change
-- log) until the operator acknowledges that file (`quarantine ack`).
-- No CHECKs on the values: the repository validates them on read (a bad row is refused, kept and reported, never
-- replayed or dropped). Rebuilt rather than altered so the new column lists in order; conventions as in 001.
CREATE TABLE race_replays_009 (
  namespace     TEXT    NOT NULL PRIMARY KEY,   -- a namespace this site was primary of when the restore ran
  epoch         INTEGER,                        -- its epoch then: the change log replayed is that epoch's
  from_seq      INTEGER NOT NULL,               -- replayed from this seq to that epoch's head
  created_at    INTEGER NOT NULL,
  unexported_in TEXT                            -- quarantine file name a fence wrote without these writes, or NULL
);
INSERT INTO race_replays_009 (namespace, epoch, from_seq, created_at, unexported_in)
  SELECT r.namespace, (SELECT n.epoch FROM namespaces n WHERE n.name = r.namespace), r.from_seq, r.created_at, NULL
  FROM race_replays r;
DROP TABLE race_replays;
ALTER TABLE race_replays_009 RENAME TO race_replays;
