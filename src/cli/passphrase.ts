/**
 * Passphrases for CLI commands: from a file (`--<name>-file`, first line), an environment variable named by
 * `--<name>-env`, or a prompt on a terminal with echo off. Never from a plain argument (`--passphrase <value>` is
 * refused: it would show in `ps`, shell history and audit logs). Values never reach messages or logs.
 */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import { InputInvalidError, PassphraseSourceError } from '../errors.js';
import { PRODUCTION_SCRYPT, TEST_SCRYPT, type ScryptParams } from '../backup/format.js';

/** `passphrase` → flags `--passphrase-file`, `--passphrase-env` and the refused `--passphrase`. */
export interface PassphraseSpec {
  /** Flag stem: `passphrase`, `out-passphrase`, `ns-passphrase`, … */
  flag: string;
  /** What it opens, for help and prompts: "the device backup". */
  what: string;
  /** Help suffix, e.g. "(default: the device backup's)". */
  defaultNote?: string;
}

/** camelCase of a flag stem as commander names it: `out-passphrase` → `outPassphrase`. */
function camel(flag: string): string {
  return flag.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
}

/** Adds `--<flag>-file`, `--<flag>-env` and a hidden `--<flag>` (refused when used) to a command. */
export function addPassphraseOptions(cmd: Command, spec: PassphraseSpec): Command {
  const note = spec.defaultNote ? ` ${spec.defaultNote}` : '';
  cmd.option(`--${spec.flag}-file <file>`, `file whose first line is the passphrase of ${spec.what}${note}`);
  cmd.option(`--${spec.flag}-env <VAR>`, `environment variable holding the passphrase of ${spec.what}${note}`);
  // Declared so commander accepts it and we can refuse it with a clear message; hidden from help.
  cmd.addOption(new Option(`--${spec.flag} <value>`).hideHelp());
  return cmd;
}

export interface PassphraseSource {
  file?: string;
  env?: string;
  /** Set when the refused plain option was used; its value is never looked at. */
  plain: boolean;
}

/** Picks the spec's flags out of commander's parsed options. */
export function passphraseSource(opts: Record<string, unknown>, spec: PassphraseSpec): PassphraseSource {
  const key = camel(spec.flag);
  const file = opts[`${key}File`];
  const env = opts[`${key}Env`];
  return {
    ...(typeof file === 'string' ? { file } : {}),
    ...(typeof env === 'string' ? { env } : {}),
    plain: opts[key] !== undefined,
  };
}

/** Whether any source was given for this passphrase (a refused plain one counts, so it gets refused). */
export function passphraseGiven(src: PassphraseSource): boolean {
  return src.plain || src.file !== undefined || src.env !== undefined;
}

/**
 * Resolves a passphrase. Throws PassphraseSourceError when the plain option was used, both file and env were given,
 * the file is unreadable or its first line empty, the variable is unset or empty, or no source was given and stdin
 * is not a terminal (or `prompt` is false).
 */
export async function resolvePassphrase(src: PassphraseSource, spec: PassphraseSpec, prompt = true): Promise<string> {
  if (src.plain) {
    throw new PassphraseSourceError(
      `--${spec.flag} is refused: a passphrase given on the command line shows in the process list and shell history`,
      { hint: `Use --${spec.flag}-file <file> or --${spec.flag}-env <VAR>, or run on a terminal to be prompted.` },
    );
  }
  if (src.file !== undefined && src.env !== undefined) {
    throw new PassphraseSourceError(`give --${spec.flag}-file or --${spec.flag}-env, not both`);
  }
  if (src.file !== undefined) return fromFile(src.file, spec);
  if (src.env !== undefined) return fromEnv(src.env, spec);
  if (prompt && process.stdin.isTTY && process.stderr.isTTY) return promptHidden(`Passphrase of ${spec.what}: `);
  throw new PassphraseSourceError(`no passphrase for ${spec.what}: give --${spec.flag}-file or --${spec.flag}-env (stdin is not a terminal)`);
}

async function fromFile(file: string, spec: PassphraseSpec): Promise<string> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new PassphraseSourceError(`cannot read --${spec.flag}-file ${file} (${code})`, { path: file });
  }
  const first = text.split('\n', 1)[0]?.replace(/\r$/, '') ?? '';
  if (first === '') throw new PassphraseSourceError(`--${spec.flag}-file ${file}: the first line is empty`, { path: file });
  return first;
}

function fromEnv(name: string, spec: PassphraseSpec): string {
  const v = process.env[name];
  if (v === undefined || v === '') throw new PassphraseSourceError(`--${spec.flag}-env: environment variable ${name} is unset or empty`);
  return v;
}

/** Reads one line from the terminal without echo. Ctrl-C / Ctrl-D abort with PassphraseSourceError. */
function promptHidden(question: string): Promise<string> {
  const stdin = process.stdin;
  return new Promise((resolve, reject) => {
    let value = '';
    process.stderr.write(question);
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const finish = (err?: Error): void => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.removeListener('data', onData);
      process.stderr.write('\n');
      if (err) reject(err);
      else resolve(value);
    };
    const onData = (chunk: string): void => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') {
          if (value === '') return finish(new PassphraseSourceError('empty passphrase entered'));
          return finish();
        }
        if (ch === '\u0003' || ch === '\u0004') return finish(new PassphraseSourceError('passphrase prompt aborted'));
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else value += ch;
      }
    };
    stdin.on('data', onData);
  });
}

/** `--scrypt production|test`: KDF parameters for files this command writes under a new passphrase. */
export function addScryptOption(cmd: Command): Command {
  return cmd.option(
    '--scrypt <params>',
    "scrypt parameters for a new output passphrase: 'production' (default, as the firmware) or 'test' (N=2,r=1,p=1; for test backups only)",
    'production',
  );
}

export function parseScrypt(value: unknown): ScryptParams {
  if (value === undefined || value === 'production') return PRODUCTION_SCRYPT;
  if (value === 'test') return TEST_SCRYPT;
  throw new InputInvalidError(`--scrypt must be 'production' or 'test', got ${JSON.stringify(value)}`, {
    hint: "Use --scrypt production (default) or --scrypt test (only for test backups).",
  });
}
