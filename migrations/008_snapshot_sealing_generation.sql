-- 008: the snapshot sealing generation of this site's primary (issue 11: after the primary's daemon restarted it sealed
-- under a fresh salt, so each replica's first sync after that derived the new key on its own path, about a second with
-- the firmware's scrypt). The ring (src/replicator/snapshot-keys.ts) records here the salt it seals under, the scrypt
-- parameters, when that generation was born and how many snapshots it has sealed, raised BEFORE each snapshot is
-- sealed, so a restarted daemon re-derives that salt's key while the generation is within its limits and the AES-GCM
-- bound counts uses across restarts (docs/key-material.md). Public values only: the salt is in clear in every snapshot
-- file's header. Never the key or the passphrase.
-- One row, replaced by each write. No CHECKs on the values: the repository validates them on write and on read, and a
-- bad row (a hand edit, a copied file) is read as "none remembered" with a warning instead of failing the open; the
-- next write replaces it. Conventions as in 001.
CREATE TABLE snapshot_sealing_generation (
  id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  salt       BLOB    NOT NULL,
  scrypt_n   INTEGER NOT NULL,
  scrypt_r   INTEGER NOT NULL,
  scrypt_p   INTEGER NOT NULL,
  born_at    INTEGER NOT NULL,   -- ms since the epoch, when the generation's key was derived
  uses       INTEGER NOT NULL,   -- snapshots leased under it, counted before each is sealed
  updated_at INTEGER NOT NULL
) STRICT;
