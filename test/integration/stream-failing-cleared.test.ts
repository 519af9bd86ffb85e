/**
 * The operator drill's "primary lost, replica promoted": the replica's change stream failed while its primary was
 * away (`stream_failing{reason="peer_unreachable"}` 1, as it should). Once the replica is promoted there is no stream
 * left to fail, so the gauge must drop to 0: left at 1 it fired `NethsmReplicatorStreamFailing` at the new primary ten
 * minutes after every failover, for a stream that no longer exists.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { Lab } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';

const NS = 'alpha';

describe('stream_failing after the stream stops (promoted here)', () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  it('drops to 0 once the namespace is primary here, instead of firing the alert for a stream that no longer runs', async () => {
    lab = await Lab.create({ namespaces: [{ name: NS, primary: 'a' }], retryInterval: '200ms' });
    await lab.startDaemons();
    const [a, b] = [lab.site('a'), lab.site('b')];
    await b.daemon!.syncer.sync(NS, { actor: 'test' });
    const failing = async (): Promise<Record<string, number>> => {
      const values = (await b.registry.getSingleMetric('nethsm_replicator_stream_failing')?.get())?.values ?? [];
      return Object.fromEntries(values.filter((v) => v.labels.namespace === NS).map((v) => [String(v.labels.reason), v.value]));
    };

    // The primary is lost: b's stream fails for it, and says so.
    await a.stopDaemon();
    await waitFor(() => b.daemon!.stream.status(NS)?.lastError?.code === 'NHR_ERR_PEER_UNREACHABLE', "b's stream to fail for the lost primary", 30_000);
    expect((await failing()).peer_unreachable).toBe(1);
    // Nor does it claim to be current: the head it knows is from before the failure.
    expect(b.daemon!.stream.status(NS)).toMatchObject({ changesBehind: null });
    expect(b.daemon!.stream.status(NS)!.lagSeconds).toBeGreaterThan(0);

    await b.daemon!.failover.promote(NS, { force: false, actor: 'operator@b' });
    expect(b.daemon!.ctx.store.roles.get(NS)?.role).toBe('primary');
    // The puller goes idle at its next look at the role row (the promote pokes it); before the fix the gauge stayed 1.
    await waitFor(async () => Object.values(await failing()).every((v) => v === 0), 'stream_failing to drop to 0 at the new primary', 15_000);
  }, 90_000);
});
