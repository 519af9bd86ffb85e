/**
 * Logging: pino JSON lines with a redaction list covering every secret-bearing field name the project uses.
 * Contract: callers log objects, never interpolate secrets into messages; redaction is the safety net.
 */
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

/** Field names that may carry secrets anywhere in a logged object (matched at any of the first depths). */
export const SECRET_FIELDS = [
  'passphrase',
  'password',
  'backupPassphrase',
  'unlockPassphrase',
  'adminPassphrase',
  'newPassphrase',
  'currentPassphrase',
  'replicationPassphrase',
  'authorization',
  'Authorization',
  'token',
  'secret',
  'private',
  'privateKey',
  'key_file',
  'keyMaterial',
  'wrappedKey',
  'data',
] as const;

function redactPaths(): string[] {
  const out: string[] = [];
  for (const f of SECRET_FIELDS) {
    out.push(f, `*.${f}`, `*.*.${f}`, `*.*.*.${f}`);
  }
  out.push('req.headers.authorization', 'headers.authorization');
  return out;
}

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** Where lines go; defaults to stderr so stdout stays free for command output. */
  destination?: DestinationStream;
}

/** Creates the process logger. Idempotent per call; cheap. */
export function createLogger(options: LoggerOptions = {}): Logger {
  return pino(
    {
      name: options.name ?? 'nethsm-replicator',
      level: options.level ?? process.env.NHR_LOG_LEVEL ?? 'info',
      redact: { paths: redactPaths(), censor: '[redacted]' },
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    options.destination ?? pino.destination({ fd: 2, sync: false }),
  );
}

/** A logger that drops everything: for tests and library use without a logger. */
export const silentLogger: Logger = pino({ level: 'silent' });
