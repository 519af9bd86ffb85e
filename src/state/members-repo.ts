/**
 * The `member_health` table: the recovery state of each member (this site's NetHSM, each peer), so a restarted
 * daemon resumes its failure counts and retry schedule. Field names match `MemberState` of `src/members/monitor.ts`.
 */
import type { Database, Statement } from 'better-sqlite3';
import { prepare } from './sqlite.js';

export type MemberStatus = 'ok' | 'unreachable' | 'locked' | 'not-operational' | 'recovering' | 'fenced';

export interface MemberHealth {
  readonly name: string;
  readonly status: MemberStatus;
  readonly consecutiveFailures: number;
  readonly attempts: number;
  readonly gaveUp: boolean;
  readonly lastErrorCode: string | null;
  /** An error message; by the error registry's contract it holds no secret. */
  readonly lastError: string | null;
  readonly lastOkAt: number | null;
  readonly nextRetryAt: number | null;
}

interface Raw {
  member: string;
  status: MemberStatus;
  consecutive_failures: number;
  attempts: number;
  gave_up: number;
  last_error_code: string | null;
  last_error: string | null;
  last_ok_at: number | null;
  next_retry_at: number | null;
  updated_at: number;
}

const toHealth = (r: Raw): MemberHealth => ({
  name: r.member,
  status: r.status,
  consecutiveFailures: r.consecutive_failures,
  attempts: r.attempts,
  gaveUp: r.gave_up === 1,
  lastErrorCode: r.last_error_code,
  lastError: r.last_error,
  lastOkAt: r.last_ok_at,
  nextRetryAt: r.next_retry_at,
});

export class MembersRepo {
  private readonly sGet: Statement<[string], Raw>;
  private readonly sList: Statement<[], Raw>;
  private readonly sSave: Statement<Record<string, unknown>>;
  private readonly sDelete: Statement<[string]>;

  constructor(db: Database, private readonly now: () => number) {
    this.sGet = prepare(db, 'SELECT * FROM member_health WHERE member = ?');
    this.sList = prepare(db, 'SELECT * FROM member_health ORDER BY member');
    this.sSave = prepare(db, 
      `INSERT INTO member_health (member, status, consecutive_failures, attempts, gave_up, last_error_code, last_error,
         last_ok_at, next_retry_at, updated_at)
       VALUES (@name, @status, @consecutiveFailures, @attempts, @gaveUp, @lastErrorCode, @lastError, @lastOkAt, @nextRetryAt, @at)
       ON CONFLICT (member) DO UPDATE SET
         status = excluded.status, consecutive_failures = excluded.consecutive_failures, attempts = excluded.attempts,
         gave_up = excluded.gave_up, last_error_code = excluded.last_error_code, last_error = excluded.last_error,
         last_ok_at = excluded.last_ok_at, next_retry_at = excluded.next_retry_at, updated_at = excluded.updated_at`,
    );
    this.sDelete = prepare(db, 'DELETE FROM member_health WHERE member = ?');
  }

  get(name: string): MemberHealth | undefined {
    const r = this.sGet.get(name);
    return r ? toHealth(r) : undefined;
  }

  list(): MemberHealth[] {
    return this.sList.all().map(toHealth);
  }

  /** Stores the member's state (upsert); pass `MemberMonitor`'s `onChange` state as is. */
  save(state: MemberHealth): void {
    this.sSave.run({
      name: state.name,
      status: state.status,
      consecutiveFailures: state.consecutiveFailures,
      attempts: state.attempts,
      gaveUp: state.gaveUp ? 1 : 0,
      lastErrorCode: state.lastErrorCode,
      lastError: state.lastError,
      lastOkAt: state.lastOkAt,
      nextRetryAt: state.nextRetryAt,
      at: this.now(),
    });
  }

  /** Forgets a member (a peer removed from the config). */
  remove(name: string): boolean {
    return this.sDelete.run(name).changes === 1;
  }
}
