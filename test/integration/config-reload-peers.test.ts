/**
 * A reload changes the peers' certificate pins on both sides of the peer API (the client that calls a peer, the server
 * that answers it) and the snapshot schedules, without a restart. Two sites in one process (src/lab/lab.ts); the
 * SIGHUP path itself is covered by config-reload.test.ts.
 */
import { X509Certificate } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { configDigest } from '../../src/config/load.js';
import { loadSecrets } from '../../src/config/secrets.js';
import { Daemon } from '../../src/daemon/daemon.js';
import { createLogger } from '../../src/log.js';
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

  it('a config file that cannot be read: status says so, a reload fails naming the file and changes nothing', async () => {
    const b = lab.site('b').daemon!;
    const file = configOf('b');
    const before = b.ctx.config;
    await rename(file, `${file}.moved`);
    try {
      const status = await b.status();
      expect(status.config).toMatchObject({ path: file, fileDigest: null, changedOnDisk: true });
      const outcome = await b.reloadConfig();
      expect(outcome).toMatchObject({ outcome: 'failed', errorCode: 'NHR_ERR_CONFIG_INVALID', digest: null });
      expect(outcome.error).toBe(`config file ${file} cannot be read (ENOENT)`);
      expect(b.ctx.config).toBe(before);
    } finally {
      await rename(`${file}.moved`, file);
    }
    expect((await b.status()).config).toMatchObject({ changedOnDisk: false });
  });

  it('the log level follows logging.level when the daemon made its logger from the config, and only then', async () => {
    const site = lab.site('b');
    const text = await readFile(configOf('b'), 'utf8');
    const secrets = await loadSecrets(site.config, {});
    const make = (logLevelFromConfig: boolean) => {
      const logger = createLogger({ level: 'info', destination: new Writable({ write: (_c, _e, done) => done() }) });
      const d = new Daemon({ config: site.config, secrets, logger, configFile: { path: configOf('b'), digest: configDigest(text), env: {} }, logLevelFromConfig });
      return { d, logger };
    };
    const owned = make(true);
    const handed = make(false);
    try {
      await writeFile(configOf('b'), text.replace('logging: { level: info }', 'logging: { level: debug }'));
      const outcome = await owned.d.reloadConfig();
      expect(outcome.outcome).toBe('ok');
      expect(outcome.changed).toContain('logging.level');
      expect(owned.logger.level).toBe('debug');
      await handed.d.reloadConfig();
      expect(handed.logger.level).toBe('info');
    } finally {
      await writeFile(configOf('b'), text);
      await Promise.all([owned.d.close(), handed.d.close()]);
    }
  });
});
