/**
 * Named steps where a test kills the daemon process, as a power cut or the OOM killer would, to check what a restart
 * finds there (test/integration/*-crash.test.ts): with `NHR_TEST_CRASH_AT=<name>` in its environment the process sends
 * itself SIGKILL on reaching that step. Unset (always, outside those tests) a crash point does nothing.
 */

/** The steps tests can crash at. */
export type CrashPointName =
  /** An administrator restore is done on the device; its `admin_restores` record is about to be dropped. */
  | 'admin-restore-done'
  /** That record is dropped; the handover snapshot the administrators came from is about to be removed. */
  | 'admin-restore-forgotten';

/** SIGKILLs this process when `NHR_TEST_CRASH_AT` names `name`; otherwise returns at once. */
export function crashPoint(name: CrashPointName): void {
  if (process.env['NHR_TEST_CRASH_AT'] === name) process.kill(process.pid, 'SIGKILL');
}
