/**
 * Test-only builders for config documents (used by config tests and other areas' tests needing a valid config).
 */
import { stringify } from 'yaml';

/** A minimal valid config document as a plain object; callers mutate a copy per test. */
export function validConfigDoc(): Record<string, unknown> {
  return {
    site: 'berlin',
    nethsm: {
      url: 'https://nethsm.berlin.example:8443',
      tls: { fingerprint256: 'ab'.repeat(32) },
      credentials: {
        backup: { user: 'backup', passphrase: { env: 'NHR_BACKUP_PW' } },
        admin: { user: 'admin', passphrase: { file: '/run/credentials/nhr/admin' } },
      },
    },
    peers: [{ name: 'hamburg', url: 'https://replicator.hamburg.example:9443' }],
    tls: { certFile: '/etc/nhr/site.crt', keyFile: '/etc/nhr/site.key', caFile: '/etc/nhr/group-ca.crt' },
    peerApi: { listen: '0.0.0.0:9443' },
    replication: { passphrase: { env: 'NHR_REPLICATION_PW' }, backupPassphrase: { file: '/run/credentials/nhr/backup-pp' } },
    namespaces: [
      {
        name: 'payments',
        primary: 'berlin',
        schedule: '*/15 * * * *',
        maxLagForPromote: '30m',
        replicationUser: { user: 'payments~replicator', passphrase: { env: 'NHR_PAYMENTS_PW' } },
      },
    ],
  };
}

export function toYaml(doc: unknown): string {
  return stringify(doc);
}
