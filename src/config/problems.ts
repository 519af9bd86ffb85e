/**
 * Config problems: each names the setting by its path in the file (`peers[1].url is required`).
 */
import type { core } from 'zod';

export type ConfigPath = readonly PropertyKey[];

/** `['peers', 1, 'url']` → `peers[1].url`; the empty path → `config`. */
export function formatPath(path: ConfigPath): string {
  let out = '';
  for (const seg of path) {
    if (typeof seg === 'number') out += `[${seg}]`;
    else out += out === '' ? String(seg) : `.${String(seg)}`;
  }
  return out === '' ? 'config' : out;
}

/** The raw value at `path`, or undefined when any step is missing. */
export function valueAt(root: unknown, path: ConfigPath): unknown {
  let cur: unknown = root;
  for (const seg of path) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<PropertyKey, unknown>)[seg];
  }
  return cur;
}

/**
 * One zod issue as operator sentences. Custom issues carry a predicate (`is not a valid cron expression`) that
 * follows the path. Built-in issues are reworded; the input value is never echoed (it may be a secret).
 */
export function describeIssue(issue: core.$ZodIssue, raw: unknown): string[] {
  const where = formatPath(issue.path);
  switch (issue.code) {
    case 'custom':
      return [`${where} ${issue.message}`];
    case 'invalid_type':
      return valueAt(raw, issue.path) === undefined
        ? [`${where} is required`]
        : [`${where} must be ${article(issue.expected)}`];
    case 'unrecognized_keys':
      return issue.keys.map((k) => `${formatPath([...issue.path, k])} is not a known setting`);
    case 'invalid_value':
      return [`${where} must be one of ${issue.values.map((v) => JSON.stringify(v)).join(', ')}`];
    case 'too_small':
      if (issue.origin === 'string') return [`${where} must not be empty`];
      if (issue.origin === 'array') return [`${where} must have at least ${String(issue.minimum)} entries`];
      return [`${where} must be at least ${String(issue.minimum)}`];
    case 'too_big':
      return [`${where} must be at most ${String(issue.maximum)}`];
    default:
      return [`${where}: ${issue.message}`];
  }
}

function article(expected: string): string {
  if (expected === 'array') return 'a list';
  if (expected === 'object') return 'a mapping';
  if (expected === 'int') return 'a whole number';
  return /^[aeiou]/.test(expected) ? `an ${expected}` : `a ${expected}`;
}
