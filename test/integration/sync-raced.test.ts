/**
 * Under steady local writes (this site is primary of other namespaces, its gateway busy), every backup and merge a
 * sync tries outside the exclusive hold races, and it ends in the held sequence anyway. After one such sync, the
 * next ones go to the held sequence at once for a while (NamespaceSync.racedAt): fewer device backups, same result.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { renderStatus, statusExitCode } from '../../src/cli/status.js';
import { RACED_MEMORY_MS } from '../../src/daemon/sync.js';
import { Lab } from '../../src/lab/lab.js';
import { use } from '../helpers/clients.js';

describe('syncs under steady local writes', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }] });
    await lab.startDaemons();
    await use(lab.site('a').nsAdmin('alpha'), (c) => c.generateKey({ id: 'a1', type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await lab.site('b').daemon!.syncer.sync('alpha', { actor: 'test' });
  });

  afterAll(async () => {
    await lab?.close();
  });

  const health = async (path: string) => {
    const res = await fetch(`http://127.0.0.1:${lab.site('b').daemon!.ports.health}${path}`);
    return { status: res.status, body: await res.text() };
  };
  const heldGauge = async () => /^nethsm_replicator_sync_held_mode (\d+)$/m.exec((await health('/metrics')).body)?.[1];

  async function backups(): Promise<number> {
    const m = await lab.site('b').registry.getSingleMetric('nethsm_replicator_device_backups_total')?.get();
    return (m?.values ?? []).reduce((n, v) => n + v.value, 0);
  }

  it('after a sync whose every attempt outside the hold raced, the next merges inside the hold at once, and status says so', async () => {
    const b = lab.site('b');
    // Before: syncs try outside the hold; nothing to say.
    expect((await b.daemon!.status()).heldSyncs).toBeNull();
    expect(await heldGauge()).toBe('0');
    let writing = true;
    let n = 0;
    // Root keys written through B's barrier, as its gateway's writes for namespaces B is primary of would be.
    const writer = (async () => {
      while (writing) {
        await b.daemon!.ctx.barrier.shared(() => use(b.client(), (c) => c.generateKey({ id: `w${n++}`, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] })));
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    try {
      const before1 = await backups();
      const first = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
      const first_ = (await backups()) - before1;
      const before2 = await backups();
      const second = await b.daemon!.syncer.sync('alpha', { actor: 'test' });
      const second_ = (await backups()) - before2;
      expect(first).toMatchObject({ outcome: 'applied', heldMerge: true });
      expect(second).toMatchObject({ outcome: 'applied', heldMerge: true });
      // The first tried outside the hold (once, or until the writes it saw made another attempt hopeless) before its
      // held sequence; the second went there at once.
      expect(second_).toBeLessThan(first_);

      // Status, readiness and the gauge say that syncs hold writes for their whole sequence, until when, and why.
      const s = await b.daemon!.status();
      expect(s.heldSyncs).toMatchObject({ namespaces: ['alpha'] });
      expect(Date.parse(s.heldSyncs!.until) - Date.parse(s.heldSyncs!.since)).toBe(RACED_MEMORY_MS);
      expect(s.heldSyncs!.cause).toContain(`until ${s.heldSyncs!.until}`);
      const text = renderStatus(s);
      expect(text).toMatch(
        /WARNING: writes outside the namespaces being synced .* kept racing the snapshot sync of namespace alpha: (the backup and merge|all [23] backups and merges) it tried outside the write hold raced \(\d+ writes during the last\), .*\nTry: Nothing is lost/,
      );
      expect(statusExitCode(s)).toBe(0);
      expect(await heldGauge()).toBe('1');
      const ready = JSON.parse((await health('/health/ready')).body) as { warnings?: string[] };
      expect(ready.warnings?.join('\n')).toMatch(/kept racing the snapshot sync of namespace alpha.*\. Try: Nothing is lost/);
    } finally {
      writing = false;
      await writer;
    }
    // Nothing the writer wrote was lost by either restore.
    const keys = await use(b.client(), (c) => c.listKeys());
    for (let i = 0; i < n; i++) expect(keys).toContain(`w${i}`);
  });
});
