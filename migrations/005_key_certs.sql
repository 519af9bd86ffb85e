-- 005: what this site knows of each key's certificate, per namespace (issue 11, anti-entropy at about one device
-- request per key). The NetHSM's key answer does not say whether a certificate exists, so a full read of a key costs
-- two requests; a row here lets an anti-entropy read take the certificate's digest from this table and ask the device
-- for the key only. Written from full reads only (src/namespaces/key-certs.ts); the daemon's own certificate and key
-- writes (gateway at a primary, stream applies and repairs at a replica) delete the key's row, and a restore empties
-- the table. Digests and content types only: never a certificate or any key material. Conventions as in 001.
CREATE TABLE key_certs (
  namespace  TEXT    NOT NULL REFERENCES namespaces (name) ON DELETE CASCADE,
  key_id     TEXT    NOT NULL CHECK (length(key_id) BETWEEN 1 AND 128),
  -- '' when the key has no certificate; else sha256 hex over `<content type>\n<certificate bytes>` (inventory.ts).
  cert       TEXT    NOT NULL CHECK (cert = '' OR (length(cert) = 64 AND cert NOT GLOB '*[^0-9a-f]*')),
  -- '' exactly when cert is ''.
  cert_type  TEXT    NOT NULL CHECK ((cert = '') = (cert_type = '') AND length(cert_type) <= 255),
  learnt_at  INTEGER NOT NULL,
  PRIMARY KEY (namespace, key_id)
) STRICT, WITHOUT ROWID;

-- Per namespace, how many anti-entropy reads this site has made of it: picks the slice of keys whose certificates the
-- background scrub re-reads (key_certs hides nothing for longer than antiEntropy.certScrubPasses reads).
CREATE TABLE key_cert_scrub (
  namespace  TEXT    NOT NULL PRIMARY KEY REFERENCES namespaces (name) ON DELETE CASCADE,
  reads      INTEGER NOT NULL CHECK (reads >= 0)
) STRICT;
