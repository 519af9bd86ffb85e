/**
 * `nethsm-replicator key-backup …`: single-key backups (docs/backup.md).
 * `export` writes one key's blob (a namespaced key with --namespace, a root key without) into a key backup;
 * `import` merges it into a device backup of the same domain, for a partial restore.
 */
import type { Command } from 'commander';
import { exportKey, importKey } from '../backup/keybackup.js';
import { addOutputOptions, checkId, inputOptions, INPUT, outputOptions, requireOut, secondInputPassphrase, withProgress } from './backup.js';
import { addPassphraseOptions, type PassphraseSpec } from './passphrase.js';
import { formatBytes } from './progress.js';

type Flags = Record<string, unknown>;

const KEY_INPUT: PassphraseSpec = { flag: 'key-passphrase', what: 'the key backup', defaultNote: "(default: the device backup's)" };

async function exportCmd(file: string, flags: Flags): Promise<void> {
  const keyId = checkId('--key', flags.key);
  const namespace = flags.namespace === undefined ? undefined : checkId('--namespace', flags.namespace);
  const out = requireOut(flags);
  const input = await inputOptions(flags);
  const output = await outputOptions(flags, input.passphrase);
  const sum = await withProgress('key-backup export', [file], (onProgress) => exportKey(file, { namespace, keyId }, out, { input, ...output, onProgress }));
  const what = namespace === undefined ? `root key ${keyId}` : `key ${keyId} of namespace ${namespace}`;
  process.stdout.write(`wrote ${out}: key backup of ${what} (${sum.path}), ${formatBytes(sum.bytesWritten)}\n`);
}

async function importCmd(deviceFile: string, keyFile: string, flags: Flags): Promise<void> {
  const out = requireOut(flags);
  const device = await inputOptions(flags);
  const keyPass = await secondInputPassphrase(flags, KEY_INPUT, device.passphrase);
  const output = await outputOptions(flags, device.passphrase);
  const sum = await withProgress('key-backup import', [deviceFile, keyFile], (onProgress) =>
    importKey(deviceFile, keyFile, out, { device, keyBackup: { passphrase: keyPass, scrypt: 'auto' }, ...output, onProgress }),
  );
  process.stdout.write(`wrote ${out}: ${sum.path} ${sum.replaced ? 'replaced (the device backup had a key of that id)' : 'added'}, ${sum.entriesWritten} entries, ${formatBytes(sum.bytesWritten)}\n`);
}

export function registerKeyBackup(program: Command): void {
  const kb = program.command('key-backup').description('Export one key from a backup into its own file, or insert one into a device backup (offline).');

  const exp = kb
    .command('export <file>')
    .description('Write a key backup of one key of a device (or namespace) backup. Without --namespace: a root key.')
    .requiredOption('--key <id>', 'the key id')
    .option('--namespace <ns>', "the key's namespace (omit for a root key)");
  addPassphraseOptions(exp, INPUT);
  addOutputOptions(exp).action((file: string, flags: Flags) => exportCmd(file, flags));

  const imp = kb
    .command('import <device-backup> <key-backup>')
    .description("Write the device backup with the key inserted (or replacing the key of that id); refuses a key whose namespace the device lacks.");
  addPassphraseOptions(imp, { ...INPUT, what: 'the device backup' });
  addPassphraseOptions(imp, KEY_INPUT);
  addOutputOptions(imp).action((deviceFile: string, keyFile: string, flags: Flags) => importCmd(deviceFile, keyFile, flags));
}
