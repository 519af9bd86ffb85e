#!/usr/bin/env node
// What the replica's own inventory of an anti-entropy pass costs in resident memory (RSS) per key: a CompactInventory
// over a listing of --keys ids, fed one item digest per id as a pass's read does (a few deleted meanwhile), sealed,
// then walked as the comparison walks it (digestOf over ranges of 64, in order). No device: only this structure, so
// the per-key slope is not lost in a daemon's noise.
//
// Each measurement is its own child process (`--max-semi-space-size=8`, the unit's flag) running --passes passes one
// after the other (each with its own listing, as a daemon's passes have; a full GC between them), and the checkouts
// given alternate round by round, so a comparison is side by side in one run:
//   node bench/ae-memory.mjs --keys 1000000 --rounds 2 --passes 2 [--baseline /path/to/other/checkout]
// Printed per checkout and pass: RssAnon (MB) after the listing, peak while reading, after seal and after the walk, and
// the slope: (peak − listing) / keys in bytes. A checkout must be built (`npm run build`). The children inherit the
// environment (so `MALLOC_ARENA_MAX=2 node bench/ae-memory.mjs …` measures glibc's setting too).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { benchArgs } from './lib/args.mjs';

const HERE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

if (process.argv[2] === '--child') {
  const out = [];
  for (let p = 0; p < Number(process.argv[5]); p++) {
    out.push(await child(process.argv[3], Number(process.argv[4])));
    globalThis.gc?.();
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
else main();

function main() {
  const { values } = benchArgs(import.meta.url, { options: { keys: { type: 'string', default: '1000000' }, rounds: { type: 'string', default: '2' }, passes: { type: 'string', default: '2' }, baseline: { type: 'string' } } });
  const keys = Number(values.keys);
  const rounds = Number(values.rounds);
  const passes = Number(values.passes);
  if (!Number.isInteger(passes) || passes < 1) throw new Error('--passes must be a whole number ≥ 1');
  if (!Number.isInteger(keys) || keys < 1000) throw new Error('--keys must be a whole number ≥ 1000');
  if (!Number.isInteger(rounds) || rounds < 1) throw new Error('--rounds must be a whole number ≥ 1');
  const trees = [['this', HERE], ...(values.baseline ? [['baseline', path.resolve(values.baseline)]] : [])];
  const runs = Object.fromEntries(trees.map(([name]) => [name, []]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, root] of r % 2 === 0 ? trees : [...trees].reverse()) {
      const c = spawnSync(process.execPath, ['--max-semi-space-size=8', '--expose-gc', fileURLToPath(import.meta.url), '--child', root, String(keys), String(passes)], { encoding: 'utf8' });
      if (c.status !== 0) throw new Error(`${name}: ${c.stderr}`);
      runs[name].push(JSON.parse(c.stdout));
      process.stderr.write(`[ae-memory] round ${r + 1} ${name}: ${c.stdout.trim()}\n`);
    }
  }
  console.log(`\n${keys} keys, RssAnon MB (median of ${rounds}):\n`);
  console.log('| checkout, pass | listing | peak while reading | sealed | after the walk | bytes a key (peak − listing) |');
  console.log('|---|---|---|---|---|---|');
  for (const [name] of trees) {
    for (let p = 0; p < passes; p++) {
      const med = (k) => median(runs[name].map((x) => x[p][k]));
      console.log(`| ${name}, pass ${p + 1} | ${med('listing').toFixed(1)} | ${med('peak').toFixed(1)} | ${med('sealed').toFixed(1)} | ${med('walked').toFixed(1)} | ${(((med('peak') - med('listing')) * 2 ** 20) / keys).toFixed(1)} |`);
    }
  }
}

async function child(root, keys) {
  const { PackedIds } = await import(path.join(root, 'dist/nethsm/packed-ids.js'));
  const { CompactInventory } = await import(path.join(root, 'dist/namespaces/compact-inventory.js'));
  const { createHash } = await import('node:crypto');
  const { readFileSync } = await import('node:fs');
  const anon = () => Number(/RssAnon:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) / 1024;
  const dir = mkdtempSync(path.join(tmpdir(), 'nhr-ae-memory-'));
  try {
    const ids = new PackedIds();
    for (let i = 0; i < keys; i++) ids.push(`key-${String(i).padStart(8, '0')}`);
    ids.trim();
    globalThis.gc?.();
    const out = { listing: anon() };
    // The constructor of a checkout before the digests' file takes one argument; the second is then ignored.
    const inv = new CompactInventory(ids, dir);
    let peak = out.listing;
    for (let i = 0; i < keys; i++) {
      if (i % 1000 === 999) continue; // deleted meanwhile
      inv.push({ id: ids.at(i), digest: createHash('sha256').update(String(i)).digest('hex') });
      if (i % 10_000 === 0) peak = Math.max(peak, anon());
    }
    inv.seal();
    out.peak = Math.max(peak, anon());
    out.sealed = anon();
    let sink = 0;
    for (let from = 0; from < inv.size; from += 64) sink += inv.digestOf(from, Math.min(inv.size, from + 64)).charCodeAt(0);
    out.walked = anon();
    out.peak = Math.max(out.peak, out.walked);
    inv.close?.();
    return { ...out, sink: sink > 0 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}
