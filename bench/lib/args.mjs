// The benches' command line: node's parseArgs, plus `--help` (the bench file's opening comment, which is its
// usage) and a clear error for an unknown or malformed option instead of a stack trace.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/** The bench's opening `//` comment block (after the shebang), without the comment markers. */
function usage(file) {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out = [];
  for (const line of lines) {
    if (line.startsWith('#!')) continue;
    if (!line.startsWith('//')) break;
    out.push(line.replace(/^\/\/ ?/, ''));
  }
  return out.join('\n');
}

/**
 * `parseArgs(config)` for the bench at `metaUrl` (its `import.meta.url`). `--help`/`-h` prints the usage and exits 0;
 * an option parseArgs refuses prints `Error: …` and `Try: …` and exits 2. Returns what parseArgs returns.
 */
export function benchArgs(metaUrl, config) {
  const file = fileURLToPath(metaUrl);
  const args = config.args ?? process.argv.slice(2);
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(`${usage(file)}\n`);
    process.exit(0);
  }
  const fail = (message) => {
    process.stderr.write(`Error: ${message}\nTry: node bench/${basename(file)} --help\n`);
    process.exit(2);
  };
  let parsed;
  try {
    parsed = parseArgs({ ...config, args });
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  // `strict: false` (a bench that passes its child processes positional arguments) would take any option silently.
  const unknown = Object.keys(parsed.values).filter((k) => !Object.hasOwn(config.options ?? {}, k));
  if (unknown.length > 0) fail(`unknown option ${unknown.map((k) => `--${k}`).join(', ')}`);
  for (const [k, v] of Object.entries(parsed.values)) {
    const want = config.options[k].type;
    const got = [v].flat().every((x) => typeof x === want);
    if (!got) fail(`option --${k} ${want === 'string' ? 'needs a value' : 'takes no value'}`);
  }
  return parsed;
}
