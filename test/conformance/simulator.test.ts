/** The conformance suite against the simulator (always runs). */
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { startSimulator } from '../../src/sim/server.js';
import { runConformance } from './suite.js';

runConformance('simulator', async () => {
  // Test scrypt parameters keep unlock and backup-key derivation fast; the rules under test do not depend on them.
  const sim = await startSimulator({ backupScrypt: TEST_SCRYPT, unlockScrypt: TEST_SCRYPT });
  return { url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, close: () => sim.close() };
});
