/**
 * The operator drill's "state disk full": a replica whose state database cannot take a write (SQLITE_FULL; here the
 * database's `max_page_count` pinned at its size, which SQLite answers as a full disk) must say so. Before, its stream
 * failed with NHR_ERR_INTERNAL ("database or disk is full", no remedy, `stream_failing{reason="other"}`) while
 * `/health/ready` answered 200 with `"state":{"ok":true}`: its check only read from the store.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, type Lab, type LabSite } from '../../src/lab/lab.js';
import { statusProblems } from '../../src/cli/status.js';
import { pragma } from '../../src/state/sqlite.js';
import { waitFor } from '../helpers/wait.js';
import { caughtUp, importBody, streamingPair } from './stream-helpers.js';

const NS = 'alpha';

describe('a replica whose state disk is full', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  const ready = async (s: LabSite): Promise<{ status: number; body: { checks: Record<string, { ok: boolean; detail?: string }> } }> => {
    const r = await fetch(`http://127.0.0.1:${s.daemon!.ports.health}/health/ready`);
    return { status: r.status, body: (await r.json()) as { checks: Record<string, { ok: boolean; detail?: string }> } };
  };

  it('names NHR_ERR_STATE_WRITE_FAILED with its remedy, fails readiness until a write succeeds, and catches up after', async () => {
    const pair = await streamingPair(NS);
    lab = pair.lab;
    const { a, b } = pair;
    const db = b.daemon!.ctx.store.db;
    const stream = () => b.daemon!.stream.status(NS);
    const failing = async (): Promise<Record<string, number>> => {
      const values = (await b.registry.getSingleMetric('nethsm_replicator_stream_failing')?.get())?.values ?? [];
      return Object.fromEntries(values.filter((v) => v.labels.namespace === NS).map((v) => [String(v.labels.reason), v.value]));
    };
    expect((await ready(b)).status).toBe(200);

    // The disk is full: no page can be added to b's database any more.
    pragma(db, `max_page_count = ${Number(pragma(db, 'page_count'))}`);
    const gw = a.gatewayClient(`${NS}~admin`, LAB_PASSPHRASES.nsAdmin);
    try {
      // Each applied change adds rows at b; sooner or later one needs a new page (bounded: 200 keys).
      for (let i = 0; i < 200 && stream()?.lastError === null; i++) {
        await gw.importKey(importBody('EC_P256', ['ECDSA_Signature']), `full${i}`);
        await waitFor(() => stream()?.lastError !== null || (stream()?.changesBehind === 0 && stream()?.position?.seq === stream()?.head?.seq), `b to apply or fail full${i}`, 20_000);
      }
      expect(stream()?.lastError, JSON.stringify(stream()?.lastError)).toMatchObject({ code: 'NHR_ERR_STATE_WRITE_FAILED' });
      expect(stream()?.lastError?.message).toMatch(/^the state database cannot be written: database or disk is full \(SQLITE_FULL\)/);
      expect((await failing()).state_store).toBe(1);
      const unready = await ready(b);
      expect(unready.status).toBe(503);
      expect(unready.body.checks.state).toMatchObject({ ok: false });
      expect(unready.body.checks.state?.detail).toMatch(/database or disk is full.*Try: Free space on the filesystem of the state directory/);
      // status: a PROBLEM of the site (not only of the stream) with its remedy; metrics: the site-wide gauge too.
      const problems = statusProblems(await b.daemon!.status());
      expect(problems.find((p) => p.includes('[NHR_ERR_STATE_WRITE_FAILED]'))).toMatch(/the state database cannot be written: database or disk is full[^\n]*\nTry: Free space/);
      expect(problems.find((p) => p.includes('change stream FAILING'))).toMatch(/\(NHR_ERR_STATE_WRITE_FAILED\)[^\n]*\nTry: Free space/);
      expect((await b.registry.getSingleMetric('nethsm_replicator_state_write_failing')?.get())?.values[0]?.value).toBe(1);

      // Space again: the stream applies what waited, and a write that succeeds makes the site ready again.
      pragma(db, 'max_page_count = 1073741823');
      await caughtUp(a, b, NS);
      await waitFor(async () => (await ready(b)).status === 200, 'b to be ready again', 20_000);
      expect(await failing()).not.toHaveProperty('state_store', 1);
      expect(statusProblems(await b.daemon!.status()).filter((p) => p.includes('STATE_WRITE_FAILED'))).toEqual([]);
      expect((await b.registry.getSingleMetric('nethsm_replicator_state_write_failing')?.get())?.values[0]?.value).toBe(0);
    } finally {
      await gw.close();
    }
  }, 120_000);
});
