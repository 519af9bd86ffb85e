/**
 * Cron jobs (node-cron), one per namespace schedule. A job never overlaps itself: a run still going when the next tick
 * comes skips that tick. But no run holds its job for longer than `maxRunMs`: past it the job counts as done for the
 * scheduler (logged), so a run that hangs cannot skip every later tick for ever (node-cron's overlap prevention would).
 * The run itself goes on; jobs that must not run twice at once keep their own single flight (NamespaceSync does).
 * Failures are logged and left to the job's own retry logic.
 * Long-lived part with idempotent start()/close().
 */
import cron, { type ScheduledTask } from 'node-cron';
import { InputInvalidError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { withDeadline } from '../util/deadline.js';

export interface Job {
  name: string;
  /** 5-field (minute) or 6-field (second) cron expression. */
  schedule: string;
  run(): Promise<unknown>;
}

export interface SchedulerOptions {
  jobs: Job[];
  timezone?: string;
  logger?: Logger;
  /** Longest a run keeps later ticks of its job from starting (default 15 min). */
  maxRunMs?: number;
}

export const DEFAULT_MAX_RUN_MS = 15 * 60_000;

/** Throws InputInvalidError naming the expression when node-cron would refuse it. Pure. */
export function assertValidCron(expression: string, where: string): void {
  if (!cron.validate(expression)) throw new InputInvalidError(`${where} "${expression}" is not a valid cron expression`);
}

const periods = new Map<string, number | null>();

/**
 * The shortest gap (ms) between two runs of a cron expression over its next 25 runs, or null when it is not valid or
 * runs fewer than twice. Cached per expression (status and every scrape ask).
 */
export function cronPeriodMs(expression: string): number | null {
  const known = periods.get(expression);
  if (known !== undefined) return known;
  let period: number | null = null;
  if (cron.validate(expression)) {
    const task = cron.createTask(expression, () => undefined);
    try {
      const runs = task.getNextRuns(25).map((d) => d.getTime());
      const gaps = runs.slice(1).map((t, i) => t - runs[i]!);
      period = gaps.length > 0 ? Math.min(...gaps) : null;
    } finally {
      void task.destroy();
    }
  }
  periods.set(expression, period);
  return period;
}

export class Scheduler {
  private tasks = new Map<string, ScheduledTask>();
  private readonly jobs = new Map<string, Job>();
  private readonly running = new Set<string>();
  private readonly log: Logger;

  constructor(private readonly options: SchedulerOptions) {
    this.log = options.logger ?? silentLogger;
    for (const job of options.jobs) {
      assertValidCron(job.schedule, `schedule of ${job.name}`);
      this.jobs.set(job.name, { ...job });
    }
  }

  async start(): Promise<void> {
    if (this.tasks.size > 0) return;
    for (const job of this.jobs.values()) this.tasks.set(job.name, this.schedule(job));
  }

  /**
   * Runs job `name` on `schedule` from now on (config reload). A run in progress finishes; the next tick follows the new
   * expression. Throws InputInvalidError for an invalid expression or an unknown job, changing nothing. Returns
   * whether the schedule changed.
   */
  async reschedule(name: string, schedule: string): Promise<boolean> {
    const job = this.jobs.get(name);
    if (!job) throw new InputInvalidError(`no scheduled job ${name}`);
    assertValidCron(schedule, `schedule of ${name}`);
    if (job.schedule === schedule) return false;
    job.schedule = schedule;
    const old = this.tasks.get(name);
    if (old) {
      this.tasks.set(name, this.schedule(job));
      await old.destroy();
    }
    return true;
  }

  /** A node-cron task for `job`; a tick while the job's previous run still runs is skipped, across reschedules too. */
  private schedule(job: Job): ScheduledTask {
    return cron.schedule(
      job.schedule,
      async () => {
        if (this.running.has(job.name)) {
          this.log.debug({ job: job.name }, 'scheduler: previous run still running; tick skipped');
          return;
        }
        this.running.add(job.name);
        try {
          // Bounded: a run that hangs holds its job at most maxRunMs, then later ticks start it again.
          await this.bounded(job);
        } finally {
          this.running.delete(job.name);
        }
      },
      {
        name: job.name,
        noOverlap: true,
        unref: true,
        suppressMissedWarning: true,
        logger: this.cronLogger(job.name),
        ...(this.options.timezone ? { timezone: this.options.timezone } : {}),
      },
    );
  }

  /**
   * node-cron's own messages (a tick skipped because the job still runs, a failure) go to the daemon's pino log as
   * JSON with the job's name; by default node-cron prints ANSI-coloured plain text to the console.
   */
  private cronLogger(job: string) {
    const log = this.log;
    const text = (m: string | Error) => (m instanceof Error ? m.message : m);
    return {
      info: (m: string) => log.info({ job }, `scheduler: ${m}`),
      warn: (m: string) => log.warn({ job }, `scheduler: ${m}`),
      error: (m: string | Error, err?: Error) => log.error({ job, err: err ?? (m instanceof Error ? m : undefined) }, `scheduler: ${text(m)}`),
      debug: (m: string | Error) => log.debug({ job }, `scheduler: ${text(m)}`),
    };
  }

  /** Runs the job; resolves when it ends or after `maxRunMs`, whichever comes first. Never rejects. */
  private async bounded(job: Job): Promise<void> {
    const run = job.run().then(
      () => undefined,
      (err: unknown) => this.log.warn({ job: job.name, err }, 'scheduled job failed'),
    );
    const maxRunMs = this.options.maxRunMs ?? DEFAULT_MAX_RUN_MS;
    // `run` never rejects, so a rejection here is the bound passing.
    await withDeadline(run, maxRunMs, () => new Error('past its bound')).catch(() =>
      this.log.warn({ job: job.name, maxRunMs }, 'scheduled job still running past its bound; later ticks start it again'),
    );
  }

  /** When `name` runs next, or null when it is not scheduled. */
  nextRun(name: string): Date | null {
    return this.tasks.get(name)?.getNextRun() ?? null;
  }

  async close(): Promise<void> {
    const tasks = [...this.tasks.values()];
    this.tasks.clear();
    await Promise.all(tasks.map((t) => t.destroy()));
  }
}
