/**
 * A replica whose primary's NetHSM is Locked: the primary's daemon answers and still claims the namespace, but writes
 * to it fail there. The replica's `status` (text and JSON) says there is no writable primary, with the remedy, and
 * `/health/ready` warns (this site serves reads: it stays ready); all of it clears once that NetHSM is unlocked.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { LAB_PASSPHRASES, Lab } from '../../src/lab/lab.js';
import { waitFor } from '../helpers/wait.js';
import { use } from '../helpers/clients.js';
import { getJson, statusOf } from '../helpers/site-status.js';

const CAUSE = "its primary a answers, but a's NetHSM is LOCKED (NHR_ERR_NETHSM_LOCKED): writes to alpha fail there (this site serves reads)";
const TRY =
  "Unlock a's NetHSM there (`POST /unlock` with the unlock passphrase, docs/operations.md §2.1). If a's NetHSM is lost, promote here: " +
  '`nethsm-replicator promote alpha --force` (its daemon still claims the namespace; docs/operations.md §4).';

describe("a replica whose primary's NetHSM is Locked", () => {
  let lab: Lab | undefined;
  afterEach(async () => {
    await lab?.close();
    lab = undefined;
  });

  it('says there is no writable primary in status and as a readiness warning, until it is unlocked', async () => {
    // retryInterval is also the periodic probe interval of members that are ok (peers and the NetHSM).
    lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], retryInterval: '300ms' });
    await lab.startDaemons();
    const a = lab.site('a');
    const b = lab.site('b');
    await b.daemon!.syncer.sync('alpha', { actor: 'test' });
    expect((await statusOf(b)).text).not.toContain('no primary');

    await use(a.client(), (c) => c.lock());
    await waitFor(async () => (await statusOf(b)).text.includes('no primary'), "b to see a's NetHSM Locked", 15_000);
    const st = await statusOf(b);
    expect(st.code).toBe(2);
    expect(st.text).toContain(`PROBLEM: namespace alpha: no primary: ${CAUSE}\nTry: ${TRY}`);
    expect(st.status.namespaces.find((n) => n.name === 'alpha')?.noPrimary).toEqual({ cause: CAUSE, try: TRY });
    // b's own NetHSM is fine: ready, with the warning.
    const ready = await getJson(b.daemon!.ports.health, '/health/ready');
    expect(ready.status).toBe(200);
    expect(ready.body.warnings).toEqual([`namespace alpha: no writable primary: ${CAUSE}. Try: ${TRY}`]);

    await use(a.client(), (c) => c.unlock(LAB_PASSPHRASES.unlock));
    await waitFor(async () => !(await statusOf(b)).text.includes('no primary'), "b to see a's NetHSM unlocked", 15_000);
    expect((await getJson(b.daemon!.ports.health, '/health/ready')).body.warnings).toBeUndefined();
  });
});
