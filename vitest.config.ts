import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['src/**/*.test.ts', 'test/**/*.test.ts'],
    // Simulators and daemons are real HTTPS servers; scrypt at production parameters costs ~100 ms.
    testTimeout: 60_000,
    hookTimeout: 60_000,
    // Two cores in CI: keep the worker count small so server-heavy tests do not starve each other.
    pool: 'forks',
    maxWorkers: 2,
    reporters: ['default', './test/summary-reporter.ts'],
  },
});
