/**
 * The primary's daemon (with its gateway) running as its own process, killed with SIGKILL while applications write
 * through the gateway: writes in flight die between intent and commit. After each restart the primary settles its
 * open intents by asking its NetHSM, and the replica converges to exactly what the primary's NetHSM holds.
 * Needs `npm run build`.
 */
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NetHsmHttpError } from '../../src/errors.js';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { NetHsmClient } from '../../src/nethsm/client.js';
import { StateStore } from '../../src/state/store.js';
import { DaemonProcess, built } from '../helpers/daemon-process.js';
import { waitFor } from '../helpers/wait.js';
import { diffInventories, importBody, inventory } from './stream-helpers.js';

const NS = 'alpha';

describe.skipIf(!built)('a primary daemon process killed with SIGKILL between intent and commit — needs `npm run build`', () => {
  let lab: Lab;
  let a: DaemonProcess;
  let gatewayUrl = '';

  const startA = async (): Promise<void> => {
    await a.start();
    gatewayUrl = /"component":"gateway","url":"(https:\/\/127\.0\.0\.1:\d+)"/.exec(a.logs)![1]!;
  };
  const killA = async (): Promise<void> => void (await a.stop('SIGKILL'));
  const committed = (): number => {
    const s = StateStore.inDir(lab.site('a').stateDir).open();
    try {
      return s.changelog.head(NS, 1).seq;
    } finally {
      s.close();
    }
  };

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: NS, primary: 'a' }], gateway: true });
    a = new DaemonProcess(path.join(lab.site('a').dir, 'config.yaml'), 'a');
    await startA();
    await lab.site('b').startDaemon();
    await lab.site('b').daemon!.syncer.sync(NS, { actor: 'test' });
  }, 120_000);

  afterAll(async () => {
    await a?.stop('SIGKILL');
    await lab?.close();
  });

  it('converges after SIGKILLs of the primary mid-write: the replica holds exactly what the primary NetHSM holds', async () => {
    for (let round = 0; round < 4; round++) {
      const gw = new NetHsmClient({ url: gatewayUrl, tls: { caPem: lab.caPem }, auth: { username: `${NS}~admin`, password: LAB_PASSPHRASES.nsAdmin } });
      const before = committed();
      let stop = false;
      // Four writers keep several mutations in flight, so the kill lands between intents and commits.
      const writers = [0, 1, 2, 3].map(async (w) => {
        for (let i = 0; !stop && i < 40; i++) {
          const id = `r${round}w${w}k${i}`;
          try {
            await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), id);
            await gw.setKeyLabel(id, `l${i}`);
            if (i % 3 === 0) await gw.deleteKey(id);
          } catch {
            return; // the daemon died under this request
          }
        }
      });
      await waitFor(() => committed() >= before + 40, `a committing in round ${round}`, 30_000, 5);
      await killA();
      stop = true;
      await Promise.all(writers);
      await gw.close().catch(() => undefined);
      await startA();
    }
    // The truth is A's NetHSM; B must match it once A's head is applied.
    await waitFor(async () => {
      const [pa, pb] = [lab.site('a').nsAdmin(NS), lab.site('b').client(`${NS}~replicator`, LAB_PASSPHRASES.replicator)];
      try {
        const d = diffInventories(await inventory(pa), await inventory(pb));
        return d.missing.length + d.extra.length + d.differ.length === 0;
      } catch (err) {
        // B is still applying: a key listed a moment ago may be deleted by the next change before it is read.
        if (err instanceof NetHsmHttpError && err.status === 404) return false;
        throw err;
      } finally {
        await Promise.all([pa.close(), pb.close()]);
      }
    }, 'B to match A', 60_000, 200);
    const pa = lab.site('a').nsAdmin(NS);
    // Every round left keys behind (imports that were not deleted), so the comparison is not of empty namespaces.
    const ids = (await inventory(pa)).map((k) => (k as { id: string }).id);
    for (let round = 0; round < 4; round++) expect(ids.some((id) => id.startsWith(`r${round}`))).toBe(true);
    await pa.close();
    // Requests cut off by a kill may log errors (a peer's stream or snapshot request); nothing may be fatal.
    expect(a.logs).not.toMatch(/"level":"fatal"/);
  });
});
