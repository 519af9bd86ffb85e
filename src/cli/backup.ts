/**
 * `nethsm-replicator backup …`: offline tools on NetHSM backup files (docs/backup.md).
 * inspect, validate, extract-namespace, merge. Every command reads with every integrity check; commands that write
 * write atomically (no output file after a failure) and never overwrite unless `--force`.
 */
import { stat } from 'node:fs/promises';
import type { Command } from 'commander';
import { listBackupContents, verifyManifest, type BackupContents } from '../backup/contents.js';
import { extractNamespace, mergeNamespace } from '../backup/namespace.js';
import type { BackupEntry, OpenBackupOptions } from '../backup/reader.js';
import type { OutputOptions } from '../backup/transform.js';
import { InputInvalidError } from '../errors.js';
import { isValidId } from '../nethsm/ids.js';
import { installSignalCleanup } from '../util/atomic-file.js';
import {
  addPassphraseOptions,
  addScryptOption,
  parseScrypt,
  passphraseGiven,
  passphraseSource,
  resolvePassphrase,
  type PassphraseSpec,
} from './passphrase.js';
import { createProgress, formatBytes } from './progress.js';

type Flags = Record<string, unknown>;

export const INPUT: PassphraseSpec = { flag: 'passphrase', what: 'the (first) input backup' };
export const OUTPUT: PassphraseSpec = { flag: 'out-passphrase', what: 'the output file', defaultNote: "(default: the input's)" };
const NS_INPUT: PassphraseSpec = { flag: 'ns-passphrase', what: 'the namespace backup', defaultNote: "(default: the device backup's)" };

/** The options that open the input: its passphrase, scrypt found automatically. */
export async function inputOptions(flags: Flags, spec: PassphraseSpec = INPUT): Promise<OpenBackupOptions & { passphrase: string }> {
  return { passphrase: await resolvePassphrase(passphraseSource(flags, spec), spec), scrypt: 'auto' };
}

/** An optional second input's passphrase; absent: `fallback`. */
export async function secondInputPassphrase(flags: Flags, spec: PassphraseSpec, fallback: string): Promise<string> {
  const src = passphraseSource(flags, spec);
  return passphraseGiven(src) ? resolvePassphrase(src, spec) : fallback;
}

/** Output key choice: a new passphrase (`--out-passphrase-*`, with `--scrypt`) or the input's key and salt. */
export async function outputOptions(flags: Flags, inputPassphrase: string): Promise<OutputOptions> {
  const scrypt = parseScrypt(flags.scrypt);
  const src = passphraseSource(flags, OUTPUT);
  const overwrite = flags.force === true;
  if (!passphraseGiven(src)) {
    // Same passphrase as the input: reuse its key and salt, unless other scrypt parameters were asked for.
    return flags.scrypt === 'test' ? { passphrase: inputPassphrase, scrypt, overwrite } : { overwrite };
  }
  const passphrase = await resolvePassphrase(src, OUTPUT);
  return passphrase === inputPassphrase && flags.scrypt !== 'test' ? { overwrite } : { passphrase, scrypt, overwrite };
}

/** Validates an id argument by the NetHSM id rule; InputInvalidError naming the flag. */
export function checkId(flag: string, value: unknown): string {
  if (typeof value !== 'string' || !isValidId(value)) {
    throw new InputInvalidError(`${flag} ${JSON.stringify(value)} is not a valid NetHSM id (letters, digits and _.-, not starting with _.-; 1..128)`);
  }
  return value;
}

/** Total size of the input files, for progress percentages. */
export async function sizeOf(...paths: string[]): Promise<number> {
  let n = 0;
  for (const p of paths) n += await stat(p).then((s) => s.size, () => 0);
  return n;
}

/** Runs a writing operation with a progress line that is cleared however it ends. */
export async function withProgress<T>(label: string, inputs: string[], fn: (update: ReturnType<typeof createProgress>['update']) => Promise<T>): Promise<T> {
  installSignalCleanup();
  const progress = createProgress(label, { totalBytes: await sizeOf(...inputs) });
  try {
    return await fn(progress.update);
  } finally {
    progress.done();
  }
}

function writeOut(text: string): Promise<void> {
  return new Promise((resolve) => {
    if (process.stdout.write(text)) resolve();
    else process.stdout.once('drain', () => resolve());
  });
}

async function inspect(file: string, flags: Flags): Promise<void> {
  const input = await inputOptions(flags);
  const json = flags.json === true;
  let count = 0;
  const onEntry = async (e: BackupEntry): Promise<void> => {
    const line = json ? `${count === 0 ? '' : ',\n'}    ${JSON.stringify({ path: e.path, size: e.size })}` : `  ${String(e.size).padStart(9)}  ${e.path}\n`;
    count++;
    await writeOut(line);
  };
  // Entries stream out as they are read (constant memory); the header facts follow them.
  await writeOut(json ? '{\n  "entries": [\n' : `${file}\n  entries (size in bytes, path):\n`);
  const c = await listBackupContents(file, { input, onEntry });
  if (json) {
    const { pathsDigest: _d, firstPath: _f, inFirmwareOrder, ...rest } = c;
    const facts = { ...rest, entryCount: count, inFirmwareOrder };
    const body = JSON.stringify(facts, null, 2).slice(1); // drop "{": the object continues after "entries"
    await writeOut(`${count === 0 ? '' : '\n'}  ],${body}\n`);
  } else {
    await writeOut(describeContents(c, count));
  }
}

function describeContents(c: BackupContents, count: number): string {
  const lines = [
    `version:    ${c.version}`,
    `salt:       ${c.salt}`,
    ...(c.deviceId !== undefined ? [`device id:  ${c.deviceId}`] : []),
    `kind:       ${c.kind} backup`,
    `entries:    ${count} (${formatBytes(c.bytes)})`,
    `root:       ${c.rootKeys} keys, ${c.rootUsers} users`,
  ];
  for (const [ns, n] of Object.entries(c.namespaces)) {
    lines.push(`namespace ${ns}: ${n.keys} keys, ${n.users} users${n.present ? '' : ' (no /namespace record: users of a deleted namespace)'}`);
  }
  if (c.manifest) lines.push(`manifest:   ${JSON.stringify(c.manifest)}`);
  if (!c.inFirmwareOrder) lines.push('warning:    entries are not in firmware order (merge and key import will refuse this file)');
  return `${lines.join('\n')}\n`;
}

async function validate(file: string, flags: Flags): Promise<void> {
  const input = await inputOptions(flags);
  const c = await withProgress('validate', [file], (update) => {
    let n = 0;
    return listBackupContents(file, { input, onEntry: (e) => update({ entriesRead: ++n, bytesRead: e.offset + e.size, entriesWritten: 0, bytesWritten: 0 }) });
  });
  verifyManifest(c);
  const order = c.inFirmwareOrder ? '' : '; warning: entries not in firmware order (merge and key import will refuse it)';
  await writeOut(`valid: ${c.kind} backup, version ${c.version}, ${c.entryCount} entries, ${formatBytes(c.bytes)}${order}\n`);
}

async function extract(file: string, flags: Flags): Promise<void> {
  const ns = checkId('--namespace', flags.namespace);
  const out = requireOut(flags);
  const input = await inputOptions(flags);
  const output = await outputOptions(flags, input.passphrase);
  const sum = await withProgress('extract-namespace', [file], (onProgress) => extractNamespace(file, ns, out, { input, ...output, onProgress }));
  await writeOut(
    `wrote ${out}: namespace backup of ${ns}, ${sum.entries} entries (${sum.keys} keys, ${sum.users} users) of ${sum.sourceEntries}, ${formatBytes(sum.bytesWritten)}\n`,
  );
}

async function merge(deviceFile: string, nsFile: string, flags: Flags): Promise<void> {
  const out = requireOut(flags);
  const expect = flags.namespace === undefined ? undefined : checkId('--namespace', flags.namespace);
  const device = await inputOptions(flags);
  const nsPass = await secondInputPassphrase(flags, NS_INPUT, device.passphrase);
  const output = await outputOptions(flags, device.passphrase);
  const sum = await withProgress('merge', [deviceFile, nsFile], (onProgress) =>
    mergeNamespace(deviceFile, nsFile, out, {
      device,
      namespaceBackup: { passphrase: nsPass, scrypt: 'auto' },
      ...output,
      ...(expect !== undefined ? { expectNamespace: expect } : {}),
      onProgress,
    }),
  );
  await writeOut(
    `wrote ${out}: namespace ${sum.namespace} ${sum.namespaceWasPresent ? 'replaced' : 'added'} ` +
      `(${sum.namespaceEntriesBefore} → ${sum.namespaceEntriesAfter} entries: ${sum.replaced} replaced, ${sum.removed} removed, ${sum.added} added), ` +
      `${sum.kept} other entries kept, ${formatBytes(sum.bytesWritten)}\n`,
  );
}

export function requireOut(flags: Flags): string {
  const out = flags.out;
  if (typeof out !== 'string' || out === '') throw new InputInvalidError('-o/--out <file> is required');
  return out;
}

/** Adds -o/--out and --force. */
export function addOutputOptions(cmd: Command): Command {
  cmd.requiredOption('-o, --out <file>', 'output file (written atomically, mode 0600)');
  cmd.option('--force', 'replace the output file if it exists');
  addPassphraseOptions(cmd, OUTPUT);
  addScryptOption(cmd);
  return cmd;
}

export function registerBackup(program: Command): void {
  const backup = program.command('backup').description('Inspect, validate, split and merge NetHSM backup files (offline).');

  const inspectCmd = backup
    .command('inspect <file>')
    .description('Show version, salt, device id, kind, and each entry\'s path and size (full read with integrity checks).')
    .option('--json', 'print a JSON object: { entries: [{ path, size }], version, salt, deviceId, kind, manifest, … }');
  addPassphraseOptions(inspectCmd, INPUT).action((file: string, flags: Flags) => inspect(file, flags));

  const validateCmd = backup
    .command('validate <file>')
    .description('Read the whole file with every integrity check (and a namespace/key backup\'s manifest); exit 0 when valid.');
  addPassphraseOptions(validateCmd, INPUT).action((file: string, flags: Flags) => validate(file, flags));

  const extractCmd = backup
    .command('extract-namespace <file>')
    .description('Write a namespace backup: only one namespace\'s entries of a device backup, plus a manifest.')
    .requiredOption('--namespace <ns>', 'the namespace to extract');
  addPassphraseOptions(extractCmd, INPUT);
  addOutputOptions(extractCmd).action((file: string, flags: Flags) => extract(file, flags));

  const mergeCmd = backup
    .command('merge <device-backup> <namespace-backup>')
    .description('Write the device backup with the namespace replaced by the namespace backup\'s entries (for a partial restore).')
    .option('--namespace <ns>', 'refuse unless the namespace backup is of this namespace');
  addPassphraseOptions(mergeCmd, { ...INPUT, what: 'the device backup' });
  addPassphraseOptions(mergeCmd, NS_INPUT);
  addOutputOptions(mergeCmd).action((deviceFile: string, nsFile: string, flags: Flags) => merge(deviceFile, nsFile, flags));
}
