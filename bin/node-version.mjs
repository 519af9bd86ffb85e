// The Node.js this program needs, checked before anything else loads: the native SQLite binding (better-sqlite3)
// crashes with a segmentation fault under Node 20 instead of failing with a message. Plain JavaScript, no imports, so
// that it runs on any Node.

/** The oldest Node.js that runs nethsm-replicator (package.json `engines`). */
export const MIN_NODE = [22, 12];

/**
 * Pure: undefined when `version` (like process.versions.node, "20.20.2") is new enough, else the two lines to print.
 */
export function nodeVersionProblem(version) {
  const [major, minor] = String(version).split('.').map((n) => Number.parseInt(n, 10));
  if (!Number.isFinite(major) || !Number.isFinite(minor)) return undefined;
  if (major > MIN_NODE[0] || (major === MIN_NODE[0] && minor >= MIN_NODE[1])) return undefined;
  return [
    `Error: Node.js ${MIN_NODE.join('.')} or later is needed (this is v${version})`,
    'Try: scripts/run demo|test from the source tree (it fetches Node 24 from the npm registry), or install Node.js 24 LTS',
  ];
}
