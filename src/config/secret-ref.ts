/**
 * Secret references in the config. A secret is never written in the file: it is `{ file: <path> }` (systemd
 * `LoadCredential=` puts one under `$CREDENTIALS_DIRECTORY`) or `{ env: <NAME> }`. Only with the top-level
 * `insecureInline: true` (demos, tests) may a plain string stand for a secret; that value is kept non-enumerable so
 * that logging or serialising the config object never prints it.
 */

export interface FileSecretRef {
  readonly kind: 'file';
  readonly path: string;
}
export interface EnvSecretRef {
  readonly kind: 'env';
  readonly name: string;
}
export interface InlineSecretRef {
  readonly kind: 'inline';
  /** Non-enumerable: absent from JSON.stringify, pino and util.inspect output. */
  readonly value: string;
}
export type SecretRef = FileSecretRef | EnvSecretRef | InlineSecretRef;

/** Builds an inline reference whose value does not show when the object is serialised or logged. */
export function inlineSecret(value: string): InlineSecretRef {
  const ref = { kind: 'inline' as const };
  Object.defineProperty(ref, 'value', { value, enumerable: false, writable: false, configurable: false });
  return ref as InlineSecretRef;
}

/** Where a secret comes from, for messages: `file /run/x`, `environment variable X`, `inline value`. Never the value. */
export function describeSecretRef(ref: SecretRef): string {
  switch (ref.kind) {
    case 'file':
      return `file ${ref.path}`;
    case 'env':
      return `environment variable ${ref.name}`;
    case 'inline':
      return 'inline value';
  }
}

/** An account on the NetHSM the daemon logs in as. */
export interface AccountRef {
  readonly user: string;
  readonly passphrase: SecretRef;
}
