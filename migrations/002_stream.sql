-- 002: streaming replication (issue 6): the primary's change log and intents, the replica's record of applied
-- changes, and the peers' published transport keys. Conventions as in 001. Key material is never stored in the clear:
-- an imported key's material exists here only as envelopes (AES-256-GCM under a fresh key wrapped with RSA-OAEP-SHA256
-- to a replica site's transport key, an RSA key inside that site's NetHSM).

-- Per namespace, the last sequence number this site allocated, and at which epoch. Never reset and never lowered, so
-- seq stays strictly increasing across epochs even when retention has emptied change_log.
CREATE TABLE stream_heads (
  namespace  TEXT    NOT NULL PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
  epoch      INTEGER NOT NULL CHECK (epoch >= 0),
  seq        INTEGER NOT NULL CHECK (seq >= 0),
  updated_at INTEGER NOT NULL
) STRICT;

-- The change log of namespaces primary here: one row per committed mutation, numbered (epoch, seq).
CREATE TABLE change_log (
  namespace  TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  seq        INTEGER NOT NULL CHECK (seq >= 1),
  epoch      INTEGER NOT NULL CHECK (epoch >= 0),
  kind       TEXT    NOT NULL CHECK (kind IN ('key-imported', 'key-deleted', 'key-moved', 'cert-set', 'cert-removed',
                                              'tag-added', 'tag-removed', 'label-set', 'label-removed', 'catchup')),
  key_id     TEXT,
  -- The intent's id: also the envelopes' associated data, so an envelope cannot be replayed under another change.
  ref        TEXT    NOT NULL,
  -- JSON object of the change's public fields (new id, tag, label, certificate bytes in base64, catch-up reason).
  detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object'),
  -- JSON object site → envelope, key imports only.
  envelopes  TEXT    CHECK (envelopes IS NULL OR (json_valid(envelopes) AND json_type(envelopes) = 'object')),
  created_at INTEGER NOT NULL,
  PRIMARY KEY (namespace, seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX change_log_created_at ON change_log (created_at);

-- Mutations forwarded to the NetHSM whose outcome is not known yet: committed into change_log on 2xx, dropped
-- otherwise, resolved by asking the device after a crash.
CREATE TABLE intents (
  id         TEXT    NOT NULL PRIMARY KEY,
  namespace  TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  epoch      INTEGER NOT NULL CHECK (epoch >= 0),
  kind       TEXT    NOT NULL,
  key_id     TEXT,
  detail     TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(detail) AND json_type(detail) = 'object'),
  envelopes  TEXT    CHECK (envelopes IS NULL OR (json_valid(envelopes) AND json_type(envelopes) = 'object')),
  created_at INTEGER NOT NULL
) STRICT;

CREATE INDEX intents_namespace ON intents (namespace, created_at);

-- At a replica: every change applied (or found already in effect), written in the same transaction as the position in
-- replica_positions, so a change delivered twice is recognised and skipped.
CREATE TABLE applied_changes (
  namespace   TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  epoch       INTEGER NOT NULL CHECK (epoch >= 0),
  seq         INTEGER NOT NULL CHECK (seq >= 1),
  source_site TEXT    NOT NULL,
  kind        TEXT    NOT NULL,
  key_id      TEXT,
  -- applied: this site made the change; present: its effect was already there; catchup: handed to a snapshot.
  outcome     TEXT    NOT NULL CHECK (outcome IN ('applied', 'present', 'catchup')),
  applied_at  INTEGER NOT NULL,
  PRIMARY KEY (namespace, epoch, seq)
) STRICT, WITHOUT ROWID;

CREATE INDEX applied_changes_applied_at ON applied_changes (applied_at);

-- Peers' transport keys as they published them (public halves only), so imports can be sealed while a peer is down.
CREATE TABLE peer_transport_keys (
  site           TEXT    NOT NULL PRIMARY KEY,
  key_id         TEXT    NOT NULL,
  fingerprint    TEXT    NOT NULL,
  public_key_pem TEXT    NOT NULL,
  fetched_at     INTEGER NOT NULL
) STRICT;
