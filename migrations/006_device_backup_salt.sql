-- 006: the salt of this site's device backups (issue 11: the first sync after a start derived the device's backup key
-- on its own path, about a second with the firmware's scrypt). The NetHSM seals every backup under one key derived
-- from its backup passphrase and `backup-salt` (FACTS.md), so the daemon remembers that salt, and the scrypt
-- parameters that opened a backup with it, to derive the key in the background at its next start
-- (src/daemon/key-warmup.ts). Public values only: the salt is in clear in every backup's header. Never the key or the
-- passphrase. One row; replaced when a backup with another salt opens (the passphrase was changed). Conventions as in 001.
CREATE TABLE device_backup_salt (
  id         INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
  salt       BLOB    NOT NULL CHECK (length(salt) = 16),
  scrypt_n   INTEGER NOT NULL CHECK (scrypt_n > 1),
  scrypt_r   INTEGER NOT NULL CHECK (scrypt_r >= 1),
  scrypt_p   INTEGER NOT NULL CHECK (scrypt_p >= 1),
  learnt_at  INTEGER NOT NULL
) STRICT;
