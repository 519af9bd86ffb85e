import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';

describe('transport keys after init-replica', () => {
  let lab: Lab;

  beforeAll(async () => {
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], gateway: true });
    await lab.startDaemons();
  });

  afterAll(async () => {
    await lab?.close();
  });

  const published = async (from: string, of: string) => lab.site(from).daemon!.ctx.peers.get(of)!.transportKey();

  it("replaces the primary's transport key the bootstrap copied, once, so each site unwraps only its own envelopes", async () => {
    const b = lab.site('b');
    await waitFor(async () => (await published('a', 'b').catch(() => undefined)) !== undefined, "b's transport key");
    const [ofA, ofB] = [await published('b', 'a'), await published('a', 'b')];
    expect(ofA.fingerprint).not.toBe(ofB.fingerprint);
    const record = JSON.parse(await readFile(b.daemon!.ctx.work.bootstrapFile, 'utf8')) as { transportKeyReplaced?: boolean };
    expect(record.transportKeyReplaced).toBe(true);

    // A restart keeps the key it made.
    await b.stopDaemon();
    await b.startDaemon();
    await waitFor(async () => (await published('a', 'b').catch(() => undefined))?.fingerprint === ofB.fingerprint, 'the same key after restart');
  });
});
