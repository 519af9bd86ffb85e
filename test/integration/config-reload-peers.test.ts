/**
 * A reload changes the peers' certificate pins on both sides of the peer API (the client that calls a peer, the server
 * that answers it) and the snapshot schedules, without a restart. Two sites in one process (src/lab/lab.ts); the
 * SIGHUP path itself is covered by config-reload.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { PeerIdentityError, PeerRefusedError } from '../../src/errors.js';

describe('config reload: peer pins and schedules', () => {
  let lab: Lab;
  const wrongPin = Array(32).fill('CD').join(':');

  const configOf = (site: string) => path.join(lab.site(site).dir, 'config.yaml');
  const pinOf = async (site: string) => new X509Certificate(await readFile(path.join(lab.site(site).dir, 'peer.crt'))).fingerprint256;

  /** Rewrites `site`'s config file with its one peer pinned to `pin` (or unpinned), and reloads its daemon. */
  async function pinPeer(site: string, pin: string | undefined) {
    const text = await readFile(configOf(site), 'utf8');
    const next = text.replace(/( {2}- \{ name: \w+, url: "[^"]+")(, tls: \{ fingerprint256: "[^"]+" \})?( \})/, (_m, head: string, _pin, tail: string) =>
      pin ? `${head}, tls: { fingerprint256: "${pin}" }${tail}` : `${head}${tail}`,
    );
    expect(next).not.toBe(text);
    await writeFile(configOf(site), next);
    return lab.site(site).daemon!.reloadConfig();
  }

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
  });

  afterAll(async () => lab?.close());

  it("the client side: a peer pinned to another certificate is refused at the next call, the right pin is accepted", async () => {
    const b = lab.site('b').daemon!;
    const outcome = await pinPeer('b', wrongPin);
    expect(outcome).toMatchObject({ outcome: 'ok', changed: ['peers[0].tls.fingerprint256'], restartNeededFor: [] });
    await expect(b.ctx.peers.get('a')!.status()).rejects.toBeInstanceOf(PeerIdentityError);
    await pinPeer('b', await pinOf('a'));
    expect((await b.ctx.peers.get('a')!.status()).site).toBe('a');
  });

  it('the server side: a site refuses a peer whose certificate is no longer the pinned one, on its open connections too', async () => {
    const fromB = lab.site('b').daemon!.ctx.peers.get('a')!;
    expect((await fromB.status()).site).toBe('a');
    await pinPeer('a', wrongPin);
    const err = await fromB.status().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PeerRefusedError);
    expect((err as PeerRefusedError).remoteCode).toBe('NHR_ERR_PEER_IDENTITY');
    await pinPeer('a', undefined);
    expect((await fromB.status()).site).toBe('a');
  });

  it('a new snapshot schedule takes effect at once (next scheduled sync)', async () => {
    const b = lab.site('b').daemon!;
    const before = lab.site('b').config.namespaces[0]!.schedule;
    expect(before).toBe('0 0 1 1 *');
    const text = await readFile(configOf('b'), 'utf8');
    await writeFile(configOf('b'), text.replace(`schedule: "${before}"`, 'schedule: "*/5 * * * *"'));
    expect(await b.reloadConfig()).toMatchObject({ outcome: 'ok', changed: ['namespaces[0].schedule'] });
    expect(b.ctx.config.namespaces[0]!.schedule).toBe('*/5 * * * *');
    const status = await b.status();
    const next = Date.parse(status.namespaces[0]!.nextScheduledSync!);
    expect(next - Date.now()).toBeLessThanOrEqual(5 * 60_000);
    expect(status.config).toMatchObject({ changedOnDisk: false, restartNeededFor: [] });
  });
});
