import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const subsetPath = path.join(repoRoot, 'openapi', 'nethsm-subset.yaml');
const vendorPath = path.resolve(repoRoot, '..', 'shared', 'nethsm', 'nethsm-api.yaml');
const vendorPresent = existsSync(vendorPath);
if (!vendorPresent) console.warn(`skipping the vendor comparison: ${vendorPath} is absent`);

const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'] as const;

/** `METHOD /path` for every operation, with path parameters normalised to `{}`. */
function operations(doc: { paths?: Record<string, Record<string, unknown>> }): Set<string> {
  const out = new Set<string>();
  for (const [p, item] of Object.entries(doc.paths ?? {})) {
    const normalised = p.replace(/\{[^}]+\}/g, '{}');
    for (const m of METHODS) if (item[m] !== undefined) out.add(`${m.toUpperCase()} ${normalised}`);
  }
  return out;
}

describe('openapi/nethsm-subset.yaml', () => {
  it('regenerates to exactly the committed src/nethsm/api-types.ts', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'nhr-api-types-'));
    try {
      const out = path.join(dir, 'api-types.ts');
      const cli = path.join(repoRoot, 'node_modules', 'openapi-typescript', 'bin', 'cli.js');
      await promisify(execFile)(process.execPath, [cli, subsetPath, '-o', out], { cwd: repoRoot });
      const [fresh, committed] = await Promise.all([readFile(out, 'utf8'), readFile(path.join(repoRoot, 'src', 'nethsm', 'api-types.ts'), 'utf8')]);
      expect(fresh, 'run `npm run generate:api` and commit src/nethsm/api-types.ts').toBe(committed);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('covers the operations the client relies on', async () => {
    const ops = operations(parse(await readFile(subsetPath, 'utf8')));
    for (const op of [
      'GET /info', 'GET /health/state', 'POST /provision', 'POST /unlock', 'POST /lock', 'GET /keys', 'POST /keys',
      'GET /keys/{}*', 'PUT /keys/{}', 'POST /keys/{}/sign', 'POST /users/{}', 'PUT /namespaces/{}', 'POST /system/backup',
      'POST /system/restore', 'PUT /config/backup-passphrase', 'GET /system/info',
    ]) {
      expect(ops, op).toContain(op);
    }
  });

  it.skipIf(!vendorPresent)('has every operation with the same method and path in ../shared/nethsm/nethsm-api.yaml', async () => {
    const ours = operations(parse(await readFile(subsetPath, 'utf8')));
    const vendor = operations(parse(await readFile(vendorPath, 'utf8')));
    const missing = [...ours].filter((op) => !vendor.has(op));
    expect(missing).toEqual([]);
    expect(ours.size).toBeGreaterThanOrEqual(48);
  });
});
