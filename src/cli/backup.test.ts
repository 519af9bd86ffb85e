/**
 * CLI tests: spawn bin/nethsm-replicator (compiled dist/, built by `npm run build` / `pretest`) on synthetic backups
 * written with the codec (test scrypt) and on the real fixture my_backup.bin when present.
 */
import { execFile } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_SCRYPT } from '../backup/format.js';
import { MANIFEST_PATH } from '../backup/manifest.js';
import { isNamespacePath } from '../backup/paths.js';
import { openBackup } from '../backup/reader.js';
import { syntheticEntries, writeSyntheticDeviceBackup, type SyntheticSpec } from '../backup/synthetic.js';

const repoRoot = resolve(import.meta.dirname, '..', '..');
const bin = join(repoRoot, 'bin', 'nethsm-replicator');
const fixtures = resolve(repoRoot, '..', 'shared', 'nethsm', 'fixtures', 'backups');
const myBackup = join(fixtures, 'my_backup.bin');
const haveFixture = existsSync(myBackup);
if (!haveFixture) console.warn(`skipping fixture CLI tests: ${myBackup} is absent`);
if (!existsSync(join(repoRoot, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run `npm run build` before these tests');

const PASS = 'cli-device-passphrase-1';
const REPL = 'cli-replication-passphrase-2';
const KEYPASS = 'cli-key-passphrase-3';
const SECRETS = [PASS, REPL, KEYPASS, 'BackupPassphrase'];

const specA: SyntheticSpec = {
  namespaces: { N: { keys: 4, users: 2 }, N2: { keys: 3, users: 1 }, M: { keys: 1, users: 1 } },
  rootKeys: 2,
  rootUsers: 2,
  keySize: 400,
  deviceId: 'CLIA',
};
const specB: SyntheticSpec = { namespaces: { N: { keys: 2, users: 1 }, N2: { keys: 1, users: 1 } }, rootKeys: 3, rootUsers: 1, keySize: 400, variant: 'B', deviceId: 'CLIB' };

let dir: string;
let devA: string;
let devB: string;
let passFile: string;
let replFile: string;
const transcript: string[] = [];

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function run(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((done) => {
    execFile(process.execPath, [bin, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof (err as { code?: unknown }).code === 'number' ? ((err as { code: number }).code) : 1) : 0;
      transcript.push(stdout, stderr);
      done({ code, stdout, stderr });
    });
  });
}

async function entriesOf(path: string, passphrase: string): Promise<[string, Buffer][]> {
  const r = await openBackup(path, { passphrase, scrypt: TEST_SCRYPT });
  const out: [string, Buffer][] = [];
  for await (const e of r.entries()) out.push([e.path, Buffer.from(e.value)]);
  await r.close();
  return out;
}

const p = (name: string): string => join(dir, name);
const inDir = async (): Promise<string[]> => (await readdir(dir)).sort();

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'cli-backup-'));
  devA = p('a.bin');
  devB = p('b.bin');
  await writeSyntheticDeviceBackup(createWriteStream(devA), specA, { passphrase: PASS, scrypt: TEST_SCRYPT });
  await writeSyntheticDeviceBackup(createWriteStream(devB), specB, { passphrase: PASS, scrypt: TEST_SCRYPT });
  passFile = p('pass.txt');
  replFile = p('repl.txt');
  await writeFile(passFile, `${PASS}\n`);
  await writeFile(replFile, `${REPL}\r\nsecond line ignored\n`);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('backup inspect', () => {
  it('prints every entry and the header facts as JSON', async () => {
    const r = await run(['backup', 'inspect', devA, '--json', '--passphrase-file', passFile]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { entries: { path: string; size: number }[]; version: number; salt: string; deviceId: string; kind: string; entryCount: number };
    const expected = [...syntheticEntries(specA)];
    expect(j.entries.map((e) => e.path)).toEqual(expected.map(([path]) => path));
    // size = 3-byte length + GCM(12 + 16) + 3-byte path length + path + value
    expect(j.entries.map((e) => e.size)).toEqual(expected.map(([path, v]) => 3 + 28 + 3 + Buffer.byteLength(path) + v.length));
    expect(j).toMatchObject({ version: 1, deviceId: 'CLIA', kind: 'device', entryCount: expected.length });
    expect(j.salt).toMatch(/^[0-9a-f]{32}$/);
  });

  it.skipIf(!haveFixture)('lists the real firmware backup my_backup.bin exactly (production scrypt)', async () => {
    const bp = p('bp.txt');
    await writeFile(bp, 'BackupPassphrase\n');
    const r = await run(['backup', 'inspect', myBackup, '--json', '--passphrase-file', bp]);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { entries: { path: string }[]; version: number; kind: string };
    const golden = JSON.parse(await readFile(join(fixtures, 'my_backup.export.json'), 'utf8')) as Record<string, unknown>;
    expect(j.entries.map((e) => e.path)).toEqual(Object.keys(golden).filter((k) => k.startsWith('/')));
    expect(j).toMatchObject({ version: 0, kind: 'device' });
    expect(r.stdout).not.toContain('deviceId');
  });
});

describe('backup validate', () => {
  it('says valid and exits 0 for a good file', async () => {
    const r = await run(['backup', 'validate', devA, '--passphrase-env', 'NHR_T_PASS'], { NHR_T_PASS: PASS });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^valid: device backup, version 1/);
  });

  it('gives each damage its error code and a non-zero exit', async () => {
    const good = await readFile(devA);
    const flipped = Buffer.from(good);
    flipped[Math.floor(good.length / 2)]! ^= 0x01;
    await writeFile(p('flipped.bin'), flipped);
    await writeFile(p('cut.bin'), good.subarray(0, good.length - 100));
    await writeFile(p('empty.bin'), Buffer.alloc(0));
    const cases: [string, string, string][] = [
      [p('flipped.bin'), PASS, 'NHR_ERR_BACKUP_CORRUPTED'],
      [p('cut.bin'), PASS, 'NHR_ERR_BACKUP_TRUNCATED'],
      [p('empty.bin'), PASS, 'NHR_ERR_BACKUP_NOT_A_BACKUP'],
      [devA, 'not-the-passphrase', 'NHR_ERR_BACKUP_WRONG_PASSPHRASE'],
    ];
    for (const [file, pass, code] of cases) {
      const r = await run(['backup', 'validate', file, '--passphrase-env', 'NHR_T_PASS'], { NHR_T_PASS: pass });
      expect(r.code, file).not.toBe(0);
      expect(r.stderr, file).toContain(code);
      expect(r.stderr).toMatch(/^Error: .*\nTry: /);
    }
  });
});

describe('backup extract-namespace and merge', () => {
  it('round-trips: N is exactly the source\'s, every other entry byte-identical, N2 untouched', async () => {
    const nsb = p('n.nsb');
    const x = await run(['backup', 'extract-namespace', devA, '--namespace', 'N', '-o', nsb, '--passphrase-file', passFile, '--out-passphrase-file', replFile, '--scrypt', 'test']);
    expect(x.code, x.stderr).toBe(0);
    expect(x.stdout).toMatch(/namespace backup of N, 7 entries \(4 keys, 2 users\)/);
    const nsEntries = await entriesOf(nsb, REPL);
    expect(nsEntries.map(([path]) => path).filter((path) => path !== MANIFEST_PATH).every((path) => isNamespacePath(path, 'N'))).toBe(true);

    const out = p('merged.bin');
    const m = await run(['backup', 'merge', devB, nsb, '-o', out, '--passphrase-file', passFile, '--ns-passphrase-env', 'NHR_T_REPL'], { NHR_T_REPL: REPL });
    expect(m.code, m.stderr).toBe(0);
    expect(m.stdout).toMatch(/namespace N replaced/);
    const a = await entriesOf(devA, PASS);
    const b = await entriesOf(devB, PASS);
    const merged = await entriesOf(out, PASS); // the output defaults to the device backup's passphrase
    expect(merged.filter(([path]) => isNamespacePath(path, 'N'))).toEqual(a.filter(([path]) => isNamespacePath(path, 'N')));
    expect(merged.filter(([path]) => !isNamespacePath(path, 'N'))).toEqual(b.filter(([path]) => !isNamespacePath(path, 'N')));
    expect(merged.filter(([path]) => isNamespacePath(path, 'N2'))).toEqual(b.filter(([path]) => isNamespacePath(path, 'N2')));

    const v = await run(['backup', 'validate', nsb, '--passphrase-file', replFile]);
    expect(v.stdout).toMatch(/^valid: namespace backup/);
  });

  it('refuses bad input with its error and leaves no output file', async () => {
    const nsb = p('n2.nsb');
    expect((await run(['backup', 'extract-namespace', devA, '--namespace', 'N2', '-o', nsb, '--passphrase-file', passFile])).code).toBe(0);
    const cutNsb = p('n2-cut.nsb');
    const nsBytes = await readFile(nsb);
    await writeFile(cutNsb, nsBytes.subarray(0, nsBytes.length - 10));
    const flippedDev = p('b-flipped.bin');
    const bBytes = Buffer.from(await readFile(devB));
    bBytes[bBytes.length - 200]! ^= 0x80;
    await writeFile(flippedDev, bBytes);
    const before = await inDir();
    const out = p('never.bin');
    const cases: [string[], string][] = [
      [['backup', 'extract-namespace', devA, '--namespace', 'NX', '-o', out], 'NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND'],
      [['backup', 'extract-namespace', devA, '--namespace', '../etc', '-o', out], 'NHR_ERR_INPUT_INVALID'],
      [['backup', 'extract-namespace', devA, '--namespace', 'N', '-o', devB], 'NHR_ERR_INPUT_OUTPUT_EXISTS'],
      [['backup', 'merge', devB, devA, '-o', out], 'NHR_ERR_BACKUP_KIND_MISMATCH'],
      [['backup', 'merge', devB, cutNsb, '-o', out], 'NHR_ERR_BACKUP_TRUNCATED'],
      [['backup', 'merge', flippedDev, nsb, '-o', out], 'NHR_ERR_BACKUP_CORRUPTED'],
      [['backup', 'merge', devB, nsb, '-o', out, '--namespace', 'N'], 'NHR_ERR_BACKUP_KIND_MISMATCH'],
      [['backup', 'merge', devB, nsb, '-o', out, '--ns-passphrase-env', 'NHR_T_WRONG'], 'NHR_ERR_BACKUP_WRONG_PASSPHRASE'],
    ];
    // Side by side: nine CLI processes one after the other passed the 60 s limit on a loaded 2-core machine.
    const results = await Promise.all(cases.map(([args]) => run([...args, '--passphrase-file', passFile], { NHR_T_WRONG: 'wrong-passphrase' })));
    for (const [i, [args, code]] of cases.entries()) {
      expect(results[i]!.code, args.join(' ')).not.toBe(0);
      expect(results[i]!.stderr, args.join(' ')).toContain(code);
    }
    expect(await inDir()).toEqual(before);
  }, 180_000);
});

describe('key-backup', () => {
  it('exports a key and imports it into another device backup', async () => {
    const kb = p('k.kb');
    const x = await run(['key-backup', 'export', devA, '--namespace', 'N', '--key', 'k00000003', '-o', kb, '--passphrase-file', passFile, '--out-passphrase-env', 'NHR_T_KEY', '--scrypt', 'test'], { NHR_T_KEY: KEYPASS });
    expect(x.code, x.stderr).toBe(0);
    const out = p('b-key.bin');
    const i = await run(['key-backup', 'import', devB, kb, '-o', out, '--passphrase-file', passFile, '--key-passphrase-env', 'NHR_T_KEY'], { NHR_T_KEY: KEYPASS });
    expect(i.code, i.stderr).toBe(0);
    expect(i.stdout).toMatch(/\/key\/\.N\/k00000003 added/);
    const merged = await entriesOf(out, PASS);
    const src = [...syntheticEntries(specA)].find(([path]) => path === '/key/.N/k00000003');
    expect(merged.find(([path]) => path === '/key/.N/k00000003')).toEqual(src);
    expect(merged).toHaveLength((await entriesOf(devB, PASS)).length + 1);
  });

  it('exports a root key without --namespace, and refuses a key of a namespace the device lacks', async () => {
    const kb = p('root.kb');
    expect((await run(['key-backup', 'export', devA, '--key', 'k00000001', '-o', kb, '--passphrase-file', passFile])).code).toBe(0);
    expect((await entriesOf(kb, PASS))[0]?.[0]).toBe('/key/k00000001');
    const mkb = p('m.kb');
    expect((await run(['key-backup', 'export', devA, '--namespace', 'M', '--key', 'k00000000', '-o', mkb, '--passphrase-file', passFile])).code).toBe(0);
    const r = await run(['key-backup', 'import', devB, mkb, '-o', p('nope.bin'), '--passphrase-file', passFile]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('NHR_ERR_BACKUP_NAMESPACE_NOT_FOUND');
    expect(await readdir(dir)).not.toContain('nope.bin');
    const w = await run(['key-backup', 'import', devB, p('n.nsb'), '-o', p('nope.bin'), '--passphrase-file', passFile, '--key-passphrase-file', replFile]);
    expect(w.stderr).toContain('NHR_ERR_BACKUP_KIND_MISMATCH');
  });
});

describe('output paths', () => {
  it('refuses an output directory that does not exist', async () => {
    const sub = p('sub');
    const r = await run(['backup', 'extract-namespace', devA, '--namespace', 'N', '-o', join(sub, 'x.nsb'), '--passphrase-file', passFile]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('NHR_ERR_INPUT_INVALID');
  });
});

describe('input and output paths named in errors', () => {
  it('refuses a directory or a missing file as input, naming it, with a code and a Try', async () => {
    const sub = p('a-directory');
    await mkdir(sub);
    const cases: [string, RegExp][] = [
      [sub, /is a directory/],
      [p('no-such.bin'), /cannot open/],
    ];
    for (const [file, what] of cases) {
      const r = await run(['backup', 'validate', file, '--passphrase-file', passFile]);
      expect(r.code, file).not.toBe(0);
      expect(r.stderr, file).toContain('NHR_ERR_INPUT_INVALID');
      expect(r.stderr, file).toContain(file);
      expect(r.stderr, file).toMatch(what);
      expect(r.stderr).toMatch(/^Error: .*\nTry: /);
    }
  });

  it('names which of two inputs is cut short or does not open with its passphrase', async () => {
    const nsb = p('named.nsb');
    expect((await run(['backup', 'extract-namespace', devA, '--namespace', 'N2', '-o', nsb, '--passphrase-file', passFile])).code).toBe(0);
    const cut = p('named-cut.nsb');
    const bytes = await readFile(nsb);
    await writeFile(cut, bytes.subarray(0, bytes.length - 10));
    const kb = p('named.kb');
    expect((await run(['key-backup', 'export', devA, '--namespace', 'N2', '--key', 'k00000000', '-o', kb, '--passphrase-file', passFile])).code).toBe(0);
    const cutKb = p('named-cut.kb');
    const kbBytes = await readFile(kb);
    await writeFile(cutKb, kbBytes.subarray(0, kbBytes.length - 30));
    const before = await inDir();
    const cases: [string[], string, string][] = [
      [['backup', 'merge', devB, cut], 'NHR_ERR_BACKUP_TRUNCATED', cut],
      [['backup', 'merge', devB, nsb, '--ns-passphrase-env', 'NHR_T_WRONG'], 'NHR_ERR_BACKUP_WRONG_PASSPHRASE', nsb],
      [['key-backup', 'import', devB, cutKb], 'NHR_ERR_BACKUP_TRUNCATED', cutKb],
      [['key-backup', 'import', devB, kb, '--key-passphrase-env', 'NHR_T_WRONG'], 'NHR_ERR_BACKUP_WRONG_PASSPHRASE', kb],
    ];
    for (const [args, code, file] of cases) {
      const r = await run([...args, '-o', p('never2.bin'), '--passphrase-file', passFile], { NHR_T_WRONG: 'wrong-passphrase' });
      expect(r.code, args.join(' ')).not.toBe(0);
      expect(r.stderr, args.join(' ')).toContain(code);
      expect(r.stderr, args.join(' ')).toContain(file);
    }
    expect(await inDir()).toEqual(before);
  });

  it('refuses a directory as the output path, even with --force, and leaves no temporary file', async () => {
    const sub = p('out-directory');
    await mkdir(sub);
    const before = await inDir();
    for (const force of [[], ['--force']]) {
      const r = await run(['backup', 'extract-namespace', devA, '--namespace', 'N', '-o', sub, '--passphrase-file', passFile, ...force]);
      expect(r.code, force.join(' ')).not.toBe(0);
      expect(r.stderr, force.join(' ')).toContain('NHR_ERR_INPUT_INVALID');
      expect(r.stderr, force.join(' ')).toMatch(/is a directory/);
      expect(r.stderr, force.join(' ')).toContain(sub);
    }
    expect(await inDir()).toEqual(before);
    expect(await readdir(sub)).toEqual([]);
  });
});

describe('passphrase handling', () => {
  it('refuses a passphrase given as a plain argument, without echoing it', async () => {
    for (const flag of ['--passphrase', '--out-passphrase']) {
      const r = await run(['backup', 'extract-namespace', devA, '--namespace', 'N', '-o', p('plain.bin'), '--passphrase-file', passFile, flag, PASS]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('NHR_ERR_INPUT_PASSPHRASE_SOURCE');
      expect(r.stderr).toContain(`${flag} is refused`);
    }
    const r = await run(['backup', 'inspect', devA]);
    expect(r.stderr).toContain('NHR_ERR_INPUT_PASSPHRASE_SOURCE'); // stdin is not a terminal: no prompt
    expect(await readdir(dir)).not.toContain('plain.bin');
  });

  it('never prints a passphrase in any output of these tests', () => {
    expect(transcript.length).toBeGreaterThan(20);
    for (const text of transcript) for (const s of SECRETS) expect(text.includes(s)).toBe(false);
  });
});
