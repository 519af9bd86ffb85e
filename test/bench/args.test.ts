/**
 * The benches' command line (bench/lib/args.mjs): `--help` prints the bench's opening comment, and a bad option gets
 * `Error:`/`Try:` and exit 2 before the bench starts anything (before, a strict:false bench took `--bogus` silently
 * and filled two simulators).
 */
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';

const run = (bench: string, ...args: string[]) => spawnSync(process.execPath, [`bench/${bench}`, ...args], { encoding: 'utf8', timeout: 30_000 });
const benches = readdirSync('bench').filter((f) => f.endsWith('.mjs'));

describe('bench command lines', () => {
  it('every bench takes its options through benchArgs', () => {
    expect(benches.length).toBeGreaterThan(5);
    for (const b of benches) {
      const r = run(b, '--no-such-option');
      expect({ b, status: r.status }).toEqual({ b, status: 2 });
      expect(r.stderr).toMatch(new RegExp(`^Error: .*no-such-option.*\\nTry: node bench/${b.replace('.', '\\.')} --help\\n$`));
    }
  });

  it('--help prints the usage from the bench file and exits 0', () => {
    const r = run('stream.mjs', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Streaming replication under a sustained import load');
    expect(r.stdout).not.toContain('//');
  });

  it('an option without its value, or a flag with one, is refused by name', () => {
    expect(run('antientropy.mjs', '--keys').stderr).toContain('Error: option --keys needs a value');
    expect(run('antientropy.mjs', '--big=3').stderr).toContain('Error: option --big takes no value');
    expect(run('stream.mjs', '--keys').stderr).toContain("Error: Option '--keys <value>' argument missing");
  });
});
