import { describe, expect, it } from 'vitest';
import type { BackupEntry } from '../backup/reader.js';
import { diffEntries, isEmptyDiff } from './compare.js';

async function* entries(list: [string, string][]): AsyncGenerator<BackupEntry> {
  let i = 0;
  for (const [path, v] of list) yield { index: i, offset: i * 10, path, value: Buffer.from(v), size: 10 + i++ };
}

const device: [string, string][] = [
  ['/authentication/admin', 'A'],
  ['/authentication/alpha~op', 'U1'],
  ['/authentication/beta~op', 'U2'],
  ['/key/.alpha/k1', 'K1'],
  ['/key/.beta/k2', 'K2'],
  ['/key/.version', '0'],
  ['/key/root1', 'R1'],
  ['/namespace/alpha', 'NA'],
  ['/namespace/beta', 'NB'],
];
const outsideAlpha = (p: string) => !p.includes('alpha');

describe('streaming backup comparison', () => {
  it('finds no difference between identical backups', async () => {
    const d = await diffEntries(entries(device), entries(device), () => true);
    expect(isEmptyDiff(d)).toBe(true);
    expect(d.compared).toBe(device.length);
  });

  it('reports missing, added and changed entries in scope only', async () => {
    const after: [string, string][] = device
      .filter(([p]) => p !== '/key/.beta/k2')
      .map(([p, v]): [string, string] => (p === '/key/root1' ? [p, 'R1-new'] : p === '/key/.alpha/k1' ? [p, 'changed-but-out-of-scope'] : [p, v]));
    after.splice(after.findIndex(([p]) => p === '/key/.version'), 0, ['/key/.beta/k3', 'K3']);
    const d = await diffEntries(entries(device), entries(after), outsideAlpha);
    expect({ missing: d.missing, added: d.added, changed: d.changed }).toEqual({ missing: 1, added: 1, changed: 1 });
    expect(d.samples).toEqual([
      { path: '/key/.beta/k2', kind: 'missing' },
      { path: '/key/.beta/k3', kind: 'added' },
      { path: '/key/root1', kind: 'changed' },
    ]);
  });

  it('refuses input that is not in firmware order instead of reporting false differences', async () => {
    const shuffled: [string, string][] = [device[3]!, device[0]!];
    await expect(diffEntries(entries(shuffled), entries(device), () => true)).rejects.toThrow(/not in firmware order/);
  });

});
