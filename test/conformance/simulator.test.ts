/** The conformance suites against the simulator (always run). */
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { startSimulator } from '../../src/sim/server.js';
import { runConformance, type ConformanceTarget } from './suite.js';
import { runEncodingsConformance } from './encodings.js';

async function startTarget(): Promise<ConformanceTarget> {
  // Test scrypt parameters keep unlock and backup-key derivation fast; the rules under test do not depend on them.
  const sim = await startSimulator({ backupScrypt: TEST_SCRYPT, unlockScrypt: TEST_SCRYPT });
  return { url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, close: () => sim.close() };
}

runConformance('simulator', startTarget);
runEncodingsConformance('simulator', startTarget);
