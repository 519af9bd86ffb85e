/**
 * The daemon's config file, after start: reloading it (SIGHUP, `systemctl reload`) and telling whether the file on disk
 * still is what the daemon runs with.
 *
 * A reload reads the file, validates it with the one pure parseConfig, and hands it to the daemon, which applies what a
 * running daemon can change (src/config/reload-plan.ts) and nothing else. A file that fails validation, or a setting
 * that cannot be applied (an unreadable CA file), changes nothing: the daemon keeps running with what it had, and the
 * failure is logged and kept for `status`. Reloads never overlap. Secrets are not read again (systemd hands the
 * credentials over at start only): changing one takes a restart.
 */
import { readConfigSource, parseConfigSource } from '../config/load.js';
import { planReload, type ReloadPlan } from '../config/reload-plan.js';
import type { ReplicatorConfig } from '../config/schema.js';
import { NhrError } from '../errors.js';
import type { Logger } from '../log.js';
import { Mutex } from '../util/mutex.js';
import type { ConfigStatusView } from './status.js';

export interface ConfigReloaderOptions {
  /** The config file (absolute path) and the SHA-256 of the bytes the daemon started from. */
  path: string;
  digest: string;
  env: Readonly<Record<string, string | undefined>>;
  /** The config the daemon runs with now (changes with each reload). */
  running: () => ReplicatorConfig;
  /** Applies a reload's plan to the running parts; throws (having changed nothing) when it cannot. */
  apply: (next: ReplicatorConfig) => Promise<ReloadPlan>;
  log: Logger;
  now?: () => number;
}

/** What one reload did. */
export interface ReloadOutcome {
  at: number;
  outcome: 'ok' | 'failed';
  /** SHA-256 of the file this reload read (null when it could not be read). */
  digest: string | null;
  /** Reloadable settings it changed. */
  changed: string[];
  /** Settings the file changes that take effect at the next restart only. */
  restartNeededFor: string[];
  errorCode: string | null;
  error: string | null;
}

export class ConfigReloader {
  readonly #o: ConfigReloaderOptions;
  readonly #mutex = new Mutex();
  readonly #now: () => number;
  #loadedDigest: string;
  #loadedAt: number;
  #last: ReloadOutcome | null = null;
  /** What the last successful load left for a restart. */
  #pendingRestart: string[] = [];

  constructor(o: ConfigReloaderOptions) {
    this.#o = o;
    this.#now = o.now ?? Date.now;
    this.#loadedDigest = o.digest;
    this.#loadedAt = this.#now();
  }

  /**
   * For the metrics: whether the last reload failed (the daemon runs with an older config than the file it was asked
   * to read, until a reload succeeds), and whether the last successful load left settings for a restart.
   */
  get health(): { reloadFailed: boolean; restartNeeded: boolean } {
    return { reloadFailed: this.#last?.outcome === 'failed', restartNeeded: this.#pendingRestart.length > 0 };
  }

  /** Reads, validates and applies the file. Never throws: the outcome says what happened (and is logged). */
  reload(): Promise<ReloadOutcome> {
    return this.#mutex.run(() => this.#reload());
  }

  async #reload(): Promise<ReloadOutcome> {
    const { log } = this.#o;
    const at = this.#now();
    let digest: string | null = null;
    try {
      const source = await readConfigSource(this.#o.path);
      digest = source.digest;
      const next = parseConfigSource(source, this.#o.env);
      const plan = await this.#o.apply(next);
      this.#loadedDigest = source.digest;
      this.#loadedAt = at;
      this.#pendingRestart = [...plan.restartNeededFor];
      this.#last = { at, outcome: 'ok', digest, changed: plan.changed, restartNeededFor: plan.restartNeededFor, errorCode: null, error: null };
      log.info(
        { config: this.#o.path, digest, changed: plan.changed, restartNeededFor: plan.restartNeededFor },
        plan.restartNeededFor.length > 0
          ? `config reloaded; restart needed for: ${plan.restartNeededFor.join(', ')}`
          : plan.changed.length > 0
            ? 'config reloaded'
            : 'config reloaded: nothing a reload changes differs',
      );
    } catch (err) {
      const code = err instanceof NhrError ? err.code : 'NHR_ERR_INTERNAL';
      const message = err instanceof Error ? err.message : String(err);
      this.#last = { at, outcome: 'failed', digest, changed: [], restartNeededFor: [], errorCode: code, error: message };
      log.error({ config: this.#o.path, code, err }, 'config reload FAILED; the daemon keeps running with the config it had');
    }
    return { ...this.#last, changed: [...this.#last.changed], restartNeededFor: [...this.#last.restartNeededFor] };
  }

  /**
   * The file now against what the daemon runs with: whether it changed since the last load, and which of its settings
   * differ from the running ones in a way only a restart applies (computed from the file as it is now, when it parses).
   */
  async status(): Promise<ConfigStatusView> {
    let fileDigest: string | null = null;
    let restartNeededFor: string[] | undefined;
    try {
      const source = await readConfigSource(this.#o.path);
      fileDigest = source.digest;
      try {
        restartNeededFor = planReload(this.#o.running(), parseConfigSource(source, this.#o.env)).restartNeededFor;
      } catch {
        // A file that does not parse says nothing about restarts; the last reload's verdict stands.
      }
    } catch {
      // Unreadable now: reported as a changed file with no digest.
    }
    const last = this.#last;
    return {
      path: this.#o.path,
      loadedDigest: this.#loadedDigest,
      loadedAt: new Date(this.#loadedAt).toISOString(),
      fileDigest,
      changedOnDisk: fileDigest !== this.#loadedDigest,
      restartNeededFor: restartNeededFor ?? [...this.#pendingRestart],
      lastReload: last
        ? {
            at: new Date(last.at).toISOString(),
            outcome: last.outcome,
            changed: [...last.changed],
            restartNeededFor: [...last.restartNeededFor],
            errorCode: last.errorCode,
            error: last.error,
          }
        : null,
    };
  }
}
