import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent, request } from 'undici';
import { PRODUCTION_SCRYPT, TEST_SCRYPT } from '../backup/format.js';
import { PeerMessageInvalidError, PeerRefusedError } from '../errors.js';
import { createCa, issueCert, type CertificateBundle } from '../tls/index.js';
import { PeerClient } from './client.js';
import { newChallenge, openPassphraseProof, PassphraseCheckLimiter, sealPassphraseProof } from './passphrase-check.js';
import { PeerServer, type PeerHandlers } from './server.js';

const unused = async (): Promise<never> => Promise.reject(new Error('not used'));

describe('replication passphrase check over the peer API', () => {
  let ca: CertificateBundle;
  let siteA: CertificateBundle;
  let siteB: CertificateBundle;
  let server: PeerServer;
  let client: PeerClient;
  const asked: string[] = [];
  const handlers: PeerHandlers = {
    status: unused,
    snapshot: unused,
    announceEpoch: unused,
    handoff: unused,
    requestSync: unused,
    deviceBackup: unused,
    replicationPassphraseProof: async (peer, challenge) => {
      asked.push(peer);
      return sealPassphraseProof('group-passphrase-one', challenge, { sealer: 'a', asker: peer }, TEST_SCRYPT);
    },
  };

  beforeAll(async () => {
    ca = await createCa({ commonName: 'group CA' });
    siteA = await issueCert(ca, { commonName: 'a', usages: ['serverAuth', 'clientAuth'], ipAddresses: ['127.0.0.1'] });
    siteB = await issueCert(ca, { commonName: 'b', usages: ['serverAuth', 'clientAuth'] });
    // Three checks a minute per peer, for the test.
    server = new PeerServer({
      host: '127.0.0.1', port: 0, tls: { ...siteA, caPem: ca.certPem }, peers: [{ name: 'b' }], handlers,
      passphraseCheckLimiter: new PassphraseCheckLimiter(3, 60_000),
    });
    await server.start();
    client = new PeerClient({ url: `https://127.0.0.1:${server.port}`, identity: { name: 'a' }, tls: { ...siteB, caPem: ca.certPem } });
  });

  afterAll(async () => {
    await client?.close();
    await server?.close();
  });

  it('opens only with the same passphrase, for the asking site, and holds the challenge sent', async () => {
    const challenge = newChallenge();
    const proof = await client.replicationPassphraseProof(challenge);
    expect(proof.kdf).toEqual({ name: 'scrypt', ...TEST_SCRYPT });
    const sites = { sealer: 'a', asker: 'b' };
    expect(await openPassphraseProof('group-passphrase-one', challenge, proof, sites)).toBe(true);
    expect(await openPassphraseProof('group-passphrase-two', challenge, proof, sites)).toBe(false);
    expect(await openPassphraseProof('group-passphrase-one', newChallenge(), proof, sites)).toBe(false);
    expect(await openPassphraseProof('group-passphrase-one', challenge, proof, { sealer: 'a', asker: 'c' })).toBe(false);
    // A fresh salt each time: two answers to one challenge differ.
    const again = await client.replicationPassphraseProof(challenge);
    expect(again.salt).not.toBe(proof.salt);
    expect(again.sealed).not.toBe(proof.sealed);
    expect(asked).toEqual(['b', 'b']);
  });

  it('refuses KDF parameters snapshots never use, so a peer cannot make the checker spend memory', async () => {
    const challenge = newChallenge();
    const proof = await sealPassphraseProof('x-passphrase', challenge, { sealer: 'a', asker: 'b' }, { N: 1024, r: 8, p: 1 });
    await expect(openPassphraseProof('x-passphrase', challenge, proof, { sealer: 'a', asker: 'b' })).rejects.toBeInstanceOf(PeerMessageInvalidError);
    const production = { ...proof, kdf: { name: 'scrypt' as const, ...PRODUCTION_SCRYPT } };
    expect(await openPassphraseProof('x-passphrase', challenge, production, { sealer: 'a', asker: 'b' })).toBe(false);
  });

  it('refuses a malformed challenge before deriving anything', async () => {
    const before = asked.length;
    const agent = new Agent({ connect: { ca: ca.certPem, cert: siteB.certPem, key: siteB.keyPem, checkServerIdentity: () => undefined } });
    try {
      for (const body of [{ challenge: 'AAAA' }, { challenge: 'not base64!' }, { challenge: Buffer.alloc(65).toString('base64') }, { other: 1 }]) {
        const r = await request(`https://127.0.0.1:${server.port}/peer/v1/replication-passphrase-check`, {
          method: 'POST', dispatcher: agent, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body),
        });
        expect(r.statusCode).toBe(400);
        expect(((await r.body.json()) as { error: { code: string } }).error.code).toBe('NHR_ERR_PEER_MESSAGE_INVALID');
      }
    } finally {
      await agent.close();
    }
    expect(asked.length).toBe(before);
  });

  it('rate-limits each peer (every answer costs one scrypt): 429 with Retry-After, retryable', async () => {
    // Two of the three allowed this minute were used above.
    await client.replicationPassphraseProof(newChallenge());
    const err = await client.replicationPassphraseProof(newChallenge()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect((err as PeerRefusedError).status).toBe(429);
    expect((err as PeerRefusedError).retryable).toBe(true);
    expect((err as PeerRefusedError).message).toMatch(/too many replication passphrase checks from b; retry in \d+s/);
    expect(asked.length).toBe(3);
  });

  it('the limiter allows one check at a time and a bounded number per window', () => {
    let now = 0;
    const l = new PassphraseCheckLimiter(2, 1_000, () => now);
    expect(l.take('b')).toBeUndefined();
    expect(l.take('b')).toBe(1_000);
    expect(l.take('c')).toBeUndefined();
    l.release('b');
    now = 100;
    expect(l.take('b')).toBeUndefined();
    l.release('b');
    now = 200;
    expect(l.take('b')).toBe(800);
    now = 1_000;
    expect(l.take('b')).toBeUndefined();
  });
});
