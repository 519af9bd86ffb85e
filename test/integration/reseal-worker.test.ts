/**
 * The merge's re-seal worker thread dying (src/backup/resealer.ts) fails the merge it served and is replaced at the
 * next; before, nothing but that merge's failure said so. Now the daemon counts it
 * (`nethsm_replicator_reseal_worker_deaths_total`) and logs a warn line with the cause; closing the daemon (which ends
 * the thread on purpose) counts nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/log.js';
import { Lab } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';

describe("the merge's re-seal worker thread dying", () => {
  let lab: Lab;
  const lines: { level: string; msg: string; err?: { message?: string } }[] = [];

  beforeAll(async () => {
    const sink = { write: (s: string) => void lines.push(JSON.parse(s) as (typeof lines)[number]) };
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], logger: () => createLogger({ level: 'warn', destination: sink }) });
    await lab.startDaemons();
  });

  afterAll(async () => {
    await lab?.close();
  });

  it('is counted and logged with its cause; the next merge gets a new thread', async () => {
    const b = lab.site('b');
    const deaths = async () => (await b.registry.getSingleMetric('nethsm_replicator_reseal_worker_deaths_total')?.get())?.values[0]?.value;
    expect(await deaths()).toBe(0);
    const resealer = b.daemon!.ctx.resealer!;
    await waitFor(() => resealer.worker !== undefined, 'the daemon to start its re-seal thread');
    await resealer.worker!.terminate();
    await waitFor(async () => (await deaths()) === 1, 'the death to be counted');
    expect(lines).toContainEqual(
      expect.objectContaining({ level: 'warn', msg: expect.stringMatching(/re-seal worker thread died/), err: expect.objectContaining({ message: expect.stringMatching(/re-seal worker thread exited \(code \d+\)/) }) }),
    );
    // A sync still works: its merge starts a new thread when it needs one.
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect(await deaths()).toBe(1);
  });
});
