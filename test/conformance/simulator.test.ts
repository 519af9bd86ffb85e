/** The conformance suites against the simulator (always run). */
import { TEST_SCRYPT } from '../../src/backup/format.js';
import { startSimulator } from '../../src/sim/server.js';
import type { PowerReason, PowerState } from '../../src/sim/power.js';
import { runConformance, type ConformanceTarget } from './suite.js';
import { runEncodingsConformance } from './encodings.js';
import { runSystemTlsConformance } from './system-tls.js';

async function startTarget(): Promise<ConformanceTarget> {
  // Test scrypt parameters keep unlock and backup-key derivation fast; the rules under test do not depend on them.
  const sim = await startSimulator({ backupScrypt: TEST_SCRYPT, unlockScrypt: TEST_SCRYPT });
  return { url: sim.url, tls: { fingerprint256: sim.fingerprint256 }, close: () => sim.close() };
}

runConformance('simulator', startTarget);
runEncodingsConformance('simulator', startTarget);

runSystemTlsConformance('simulator', async () => {
  let last: { state: PowerState; reason: PowerReason } | undefined;
  const sim = await startSimulator({ backupScrypt: TEST_SCRYPT, unlockScrypt: TEST_SCRYPT, onPowerChange: (state, reason) => (last = { state, reason }) });
  return {
    url: () => sim.url,
    // A reboot comes back by itself; a shutdown needs the power button.
    powerCycle: () => {
      const boots = sim.boots;
      return async () => {
        for (let i = 0; i < 3000; i++) {
          if (sim.boots > boots) return;
          if (sim.power === 'off' && last?.reason === 'shutdown') return sim.powerOn();
          await new Promise((r) => setTimeout(r, 10));
        }
        throw new Error('the simulator neither rebooted nor shut down');
      };
    },
    close: () => sim.close(),
  };
});
