import { Writable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { createLogger } from '../log.js';
import { InputInvalidError } from '../errors.js';
import { waitFor } from '../../test/helpers/wait.js';
import { Scheduler, assertValidCron, cronPeriodMs } from './scheduler.js';

describe('scheduler', () => {
  it('runs a job on its cron schedule and stops on close', async () => {
    let runs = 0;
    const s = new Scheduler({ jobs: [{ name: 'alpha', schedule: '* * * * * *', run: async () => void runs++ }] });
    await s.start();
    await s.start();
    expect(s.nextRun('alpha')).toBeInstanceOf(Date);
    await waitFor(() => runs >= 1, 'first run', 5000);
    await s.close();
    const after = runs;
    await new Promise((r) => setTimeout(r, 1200));
    expect(runs).toBe(after);
    expect(s.nextRun('alpha')).toBeNull();
  });

  it('never overlaps a job with itself and survives a failing run; node-cron speaks through the JSON log', async () => {
    const lines: string[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        lines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
        done();
      },
    });
    const consoleWarn = vi.spyOn(console, 'warn').mockImplementation(() => undefined);
    const consoleLog = vi.spyOn(console, 'log').mockImplementation(() => undefined);
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const s = new Scheduler({
      logger: createLogger({ level: 'debug', destination }),
      jobs: [
        {
          name: 'slow',
          schedule: '* * * * * *',
          run: async () => {
            active++;
            maxActive = Math.max(maxActive, active);
            runs++;
            await new Promise((r) => setTimeout(r, 1500));
            active--;
            if (runs === 1) throw new Error('first run fails');
          },
        },
      ],
    });
    await s.start();
    await waitFor(() => runs >= 2, 'second run', 8000);
    await s.close();
    expect(maxActive).toBe(1);
    // The skipped tick was reported in the daemon's own JSON log, not as coloured text on the console.
    const records = lines.map((l) => JSON.parse(l) as { job?: string; msg: string });
    expect(records.some((r) => r.job === 'slow' && /overlap prevention/.test(r.msg))).toBe(true);
    expect(consoleWarn).not.toHaveBeenCalled();
    expect(consoleLog).not.toHaveBeenCalled();
    consoleWarn.mockRestore();
    consoleLog.mockRestore();
  });

  // Before the fix a run that never ended kept node-cron's overlap prevention skipping every later tick.
  it('starts a job again after a run that hangs past the bound', async () => {
    let runs = 0;
    const s = new Scheduler({ maxRunMs: 500, jobs: [{ name: 'hangs', schedule: '* * * * * *', run: () => (runs++, new Promise<never>(() => undefined)) }] });
    await s.start();
    try {
      await waitFor(() => runs >= 2, 'a second run after the first one hung', 8000);
    } finally {
      await s.close();
    }
  });

  it('reschedules a job (config reload): the new expression takes effect, an invalid one changes nothing', async () => {
    let runs = 0;
    const s = new Scheduler({ jobs: [{ name: 'alpha', schedule: '0 0 1 1 *', run: async () => void runs++ }] });
    await s.start();
    const yearly = s.nextRun('alpha')!;
    await expect(s.reschedule('alpha', 'every second')).rejects.toThrow(/"every second" is not a valid cron/);
    expect(s.nextRun('alpha')).toEqual(yearly);
    await expect(s.reschedule('beta', '* * * * * *')).rejects.toThrow(InputInvalidError);
    expect(await s.reschedule('alpha', '0 0 1 1 *')).toBe(false);
    expect(await s.reschedule('alpha', '* * * * * *')).toBe(true);
    expect(s.nextRun('alpha')!.getTime()).toBeLessThan(yearly.getTime());
    await waitFor(() => runs >= 1, 'a run on the new schedule', 5000);
    await s.close();
  });

  it('refuses an invalid cron expression, naming it', () => {
    expect(() => assertValidCron('*/5 * *', 'namespaces[0].schedule')).toThrow(InputInvalidError);
    expect(() => new Scheduler({ jobs: [{ name: 'x', schedule: 'every minute', run: async () => 0 }] })).toThrow(/"every minute" is not a valid cron/);
  });
});

describe('cronPeriodMs', () => {
  it('is the shortest gap between runs, and null for an invalid expression', () => {
    expect(cronPeriodMs('*/5 * * * *')).toBe(300_000);
    expect(cronPeriodMs('5,55 * * * *')).toBe(600_000);
    expect(cronPeriodMs('*/10 * * * * *')).toBe(10_000);
    expect(cronPeriodMs('not cron')).toBeNull();
  });
});
