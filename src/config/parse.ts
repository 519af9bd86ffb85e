/**
 * `parseConfig`: config text → validated, defaulted, deep-frozen {@link ReplicatorConfig}. Pure: no file or
 * environment access beyond the `env` argument; secrets stay references (see `secrets.ts`).
 */
import { parseDocument } from 'yaml';
import { ConfigInvalidError } from '../errors.js';
import { crossCheck } from './cross-check.js';
import { expandEnv } from './expand.js';
import { deepFreeze } from './freeze.js';
import { describeIssue } from './problems.js';
import { buildConfigSchema, type ReplicatorConfig } from './schema.js';

export interface ParseConfigOptions {
  /** Directory relative paths in the file are resolved against (normally the config file's). Without it, relative paths are refused. */
  baseDir?: string;
  /** Where the text came from, for messages (`/etc/nethsm-replicator/config.yaml`). */
  source?: string;
}

/** A YAML syntax problem as a line of its own: where it is and, for a key given twice, which key. */
function describeYamlError(text: string, e: { code: string; message: string; pos: [number, number]; linePos?: [{ line: number; col: number }, ...unknown[]] }): string {
  const line = e.linePos?.[0]?.line;
  const where = line === undefined ? 'the YAML' : `line ${line}`;
  if (e.code === 'DUPLICATE_KEY') {
    const key = /^[^:\n]*/.exec(text.slice(e.pos[0]))?.[0]?.trim().replace(/^["']|["']$/g, '') || '(a key)';
    return `${where}: setting "${key}" is given twice in the same mapping; keep one`;
  }
  const first = (e.message.split('\n')[0] ?? e.code).replace(/ at line \d+, column \d+:?$/, '');
  return `${where}: not valid YAML: ${first}`;
}

function invalid(problems: readonly string[], source: string | undefined): ConfigInvalidError {
  const head = `${source ?? 'config'} is invalid (${problems.length} problem${problems.length === 1 ? '' : 's'})`;
  return new ConfigInvalidError(`${head}:\n  - ${problems.join('\n  - ')}`, {
    problems,
    ...(source === undefined ? {} : { path: source }),
  });
}

/**
 * Validates config text. Throws {@link ConfigInvalidError} listing every problem (YAML syntax, unset variables, schema,
 * cross-field rules); its `problems` property holds them one by one. Never echoes a secret: inline secrets are
 * refused without quoting them, and secret references are not resolved here.
 */
export function parseConfig(
  text: string,
  env: Readonly<Record<string, string | undefined>>,
  opts: ParseConfigOptions = {},
): ReplicatorConfig {
  const doc = parseDocument(text, { prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) throw invalid(doc.errors.map((e) => describeYamlError(text, e)), opts.source);
  const parsed: unknown = doc.toJS();
  if (parsed === null || parsed === undefined) throw invalid(['config is empty'], opts.source);
  if (typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw invalid(['config must be a mapping of settings at the top level'], opts.source);
  }

  const problems: string[] = [];
  const raw = expandEnv(parsed, env, problems) as Record<string, unknown>;
  const schema = buildConfigSchema({ allowInline: raw.insecureInline === true, baseDir: opts.baseDir });
  const result = schema.safeParse(raw);
  if (!result.success) {
    for (const issue of result.error.issues) problems.push(...describeIssue(issue, raw));
  }
  problems.push(...crossCheck(raw));
  if (problems.length > 0 || !result.success) throw invalid(dedupe(problems), opts.source);
  return deepFreeze(result.data);
}

function dedupe(problems: string[]): string[] {
  return [...new Set(problems)];
}
