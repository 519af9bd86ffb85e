#!/usr/bin/env node
// The anti-entropy pass after a snapshot sync (issue 11, "about one device request per key per pass";
// docs/anti-entropy.md, "What a restore forgets"): how many device requests a key the replica's read of a namespace
// costs right after a snapshot sync of it. Two daemons with simulators (src/lab/lab.ts, in this process), namespace
// `alpha` primary at a: --keys keys generated at a's NetHSM, synced to b, two passes (the certificate tables filled),
// then --change of the keys get a certificate at a and --add keys are generated there, b syncs again, and one more
// pass runs. Printed: the replica's certificate reads of that pass (from the table, read for want of a row, scrubbed)
// and its device requests per key (one per key, one more per certificate read), the sync's time, and the same from
// --baseline DIR (another checkout's dist/, e.g. main before the change), run one after the other in this process.
// Usage: npm run build && node bench/ae-after-sync.mjs [--keys 2000] [--change 0.01] [--add 10] [--baseline DIR]
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { benchArgs } from './lib/args.mjs';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { values } = benchArgs(import.meta.url, {
  options: {
    keys: { type: 'string', default: '2000' },
    change: { type: 'string', default: '0.01' },
    add: { type: 'string', default: '10' },
    baseline: { type: 'string' },
  },
});
const KEYS = Number(values.keys);
const CHANGE = Number(values.change);
const ADD = Number(values.add);
if (!(KEYS >= 10) || !(CHANGE >= 0 && CHANGE <= 1) || !(ADD >= 0)) {
  process.stderr.write('Error: --keys must be at least 10, --change within 0..1, --add at least 0\nTry: node bench/ae-after-sync.mjs --help\n');
  process.exit(2);
}

/** Runs `fn(c)` over `ids` with 16 in flight. */
async function each(ids, fn) {
  let next = 0;
  await Promise.all(Array.from({ length: 16 }, async () => {
    while (next < ids.length) await fn(ids[next++]);
  }));
}

async function run(dist, label) {
  const { Lab } = await import(pathToFileURL(path.join(dist, 'lab/lab.js')).href);
  const lab = await Lab.create({ namespaces: [{ name: 'alpha', primary: 'a' }], simPersistence: false });
  try {
    await lab.startDaemons();
    const a = lab.site('a').nsAdmin('alpha');
    const b = lab.site('b').daemon;
    // The scrub slice (every certScrubPasses-th read of a key) left out: only what the table forgets is counted.
    b.ctx.config = { ...b.ctx.config, antiEntropy: { ...b.ctx.config.antiEntropy, certScrubPasses: 2 ** 31 - 1 } };
    const ids = Array.from({ length: KEYS }, (_, i) => `k${String(i).padStart(7, '0')}`);
    await each(ids, (id) => a.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    await b.syncer.sync('alpha', { actor: 'bench' });
    await b.antiEntropy('alpha');
    await b.antiEntropy('alpha');
    const changed = ids.filter((_, i) => i % Math.max(1, Math.round(1 / CHANGE)) === 0).slice(0, Math.round(KEYS * CHANGE));
    await each(changed, (id) => a.putCert(id, Buffer.from(`certificate of ${id}`)));
    const added = Array.from({ length: ADD }, (_, i) => `n${String(i).padStart(7, '0')}`);
    await each(added, (id) => a.generateKey({ id, type: 'EC_P256', mechanisms: ['ECDSA_Signature'] }));
    const t0 = performance.now();
    const s = await b.syncer.sync('alpha', { actor: 'bench' });
    const syncSeconds = (performance.now() - t0) / 1000;
    await b.syncer.drain();
    const r = await b.antiEntropy('alpha');
    const c = r?.certReads ?? { fromTable: 0, unknown: 0, scrubbed: 0 };
    const n = c.fromTable + c.unknown + c.scrubbed;
    const diff = r?.diff ? r.diff.missing.length + r.diff.extra.length + r.diff.differs.length : -1;
    console.log(JSON.stringify({
      code: label, keys: n, changedAtPrimary: changed.length, added: added.length, sync: s.outcome, syncSeconds: Number(syncSeconds.toFixed(2)),
      certReads: c, requestsPerKey: Number(((n + c.unknown + c.scrubbed) / n).toFixed(3)), differences: diff,
    }));
  } finally {
    await lab.close();
  }
}

await run(path.join(ROOT, 'dist'), 'this');
if (values.baseline) await run(path.join(path.resolve(values.baseline), 'dist'), `baseline ${values.baseline}`);
