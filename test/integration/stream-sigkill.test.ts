/**
 * A replica daemon running as its own process (as systemd runs it), killed with SIGKILL again and again while the
 * primary streams changes to it: after the last restart it converges, key by key. Needs `npm run build`.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { StateStore } from '../../src/state/store.js';
import { DaemonProcess, built } from '../helpers/daemon-process.js';
import { waitFor } from '../helpers/wait.js';
import { diffInventories, importBody, inventory } from './stream-helpers.js';

const NS = 'alpha';

describe.skipIf(!built)('a replica daemon process killed with SIGKILL during apply — needs `npm run build`', () => {
  let lab: Lab;
  let b: DaemonProcess;
  const startB = () => b.start();
  const killB = async (): Promise<void> => void (await b.stop('SIGKILL'));
  const bPosition = (): number => {
    const s = StateStore.inDir(lab.site('b').stateDir).open();
    try {
      return s.positions.get(NS, 'a')?.seq ?? 0;
    } finally {
      s.close();
    }
  };

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: NS, primary: 'a' }], gateway: true });
    await lab.site('a').startDaemon();
    // B's first sync, in-process, then B runs as a process.
    await lab.site('b').startDaemon();
    await lab.site('b').daemon!.syncer.sync(NS, { actor: 'test' });
    await lab.site('b').stopDaemon();
    b = new DaemonProcess(path.join(lab.site('b').dir, 'config.yaml'), 'b');
    await startB();
  }, 120_000);

  afterAll(async () => {
    await b?.stop('SIGKILL');
    await lab?.close();
  });

  it('converges after SIGKILLs at many points of the apply, nothing missing, duplicated or extra', async () => {
    const a = lab.site('a');
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    const batch = async (round: number): Promise<void> => {
      for (let i = 0; i < 24; i++) {
        const id = `r${round}k${i}`;
        await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), id);
        await gw.addKeyTag(id, 't');
        if (i % 3 === 0) await gw.setKeyLabel(id, `l${i}`);
        if (i % 4 === 1) await gw.deleteKey(id);
      }
    };
    // Five rounds: writes start, B is killed once it has applied some of them, the rest arrive while it is down.
    for (let round = 0; round < 5; round++) {
      const before = bPosition();
      const writing = batch(round);
      await waitFor(() => bPosition() > before, `B applying in round ${round}`, 30_000, 5);
      await killB();
      await writing;
      await startB();
    }
    await gw.close();
    const head = a.daemon!.ctx.store.changelog.head(NS, 1).seq;
    await waitFor(() => bPosition() === head, 'B to catch up', 60_000, 50);
    const [pa, pb] = [a.nsAdmin(NS), lab.site('b').client(`${NS}~replicator`, LAB_PASSPHRASES.replicator)];
    const diff = diffInventories(await inventory(pa), await inventory(pb));
    await Promise.all([pa.close(), pb.close()]);
    expect(diff).toEqual({ missing: [], extra: [], differ: [] });
    await killB();
  });
});
