/**
 * `${VAR}` expansion in config values. It runs on the parsed YAML's string values (never on keys, never on the
 * raw text), so a variable's value cannot change the file's structure (a value holding `: ` or `#` stays one
 * string). `${VAR:-fallback}` uses the fallback when VAR is unset or empty; `$$` is a literal `$`.
 */
import { formatPath, type ConfigPath } from './problems.js';

const REFERENCE = /\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}|\$\{[^}]*\}?/g;

/**
 * A copy of `value` with every string expanded. Each unset variable (or malformed reference) adds one problem to
 * `problems`, naming the setting's path and the variable. Pure.
 */
export function expandEnv(
  value: unknown,
  env: Readonly<Record<string, string | undefined>>,
  problems: string[],
  path: ConfigPath = [],
): unknown {
  if (typeof value === 'string') return expandString(value, env, problems, path);
  if (Array.isArray(value)) return value.map((v, i) => expandEnv(v, env, problems, [...path, i]));
  if (value !== null && typeof value === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = expandEnv(v, env, problems, [...path, k]);
    return out;
  }
  return value;
}

/** CREDENTIALS_DIRECTORY is systemd's, not the operator's: say where it comes from and how to do without it. */
const CREDENTIALS_NOTE =
  ' (systemd sets it for the service from its LoadCredential= lines; from a shell, run check-config with' +
  ' --credentials-dir <the directory holding the credential files>, or set CREDENTIALS_DIRECTORY)';

function expandString(s: string, env: Readonly<Record<string, string | undefined>>, problems: string[], path: ConfigPath): string {
  return s.replace(REFERENCE, (match: string, name: string | undefined, fallback: string | undefined) => {
    if (match === '$$') return '$';
    if (name === undefined) {
      problems.push(`${formatPath(path)} has a malformed variable reference ${JSON.stringify(match)} (use \${NAME})`);
      return match;
    }
    const v = env[name];
    if (v !== undefined && (v !== '' || fallback === undefined)) return v;
    if (fallback !== undefined) return fallback;
    problems.push(`${formatPath(path)} refers to environment variable ${name}, which is not set${name === 'CREDENTIALS_DIRECTORY' ? CREDENTIALS_NOTE : ''}`);
    return match;
  });
}
