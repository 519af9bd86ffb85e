/**
 * What the health server asks the daemon. The daemon implements {@link HealthSource}; tests use a small in-memory one.
 */

/** One readiness check, e.g. `nethsm` (own NetHSM Operational) or `state` (state store writable). */
export interface ReadinessCheck {
  ok: boolean;
  /** Why it failed, for the operator: no secrets (it goes into the HTTP answer). */
  detail?: string;
}

export interface Readiness {
  ready: boolean;
  checks: Record<string, ReadinessCheck>;
  /**
   * Conditions that need an operator's eye but leave the site ready (e.g. a snapshot sync's cost near its schedule or
   * `gateway.maxHold`), each with its remedy. They never change the answer's status.
   */
  warnings?: string[];
}

export type NamespaceRole = 'primary' | 'replica' | 'fenced';

export interface NamespaceHealth {
  role: NamespaceRole;
  /** Seconds the replica's data is behind its primary; null for a primary or a replica that never synced. */
  lagSeconds: number | null;
  /** The namespace's configured lag limit; `/replica/<ns>` without `max_lag` compares with it. */
  lagLimitSeconds?: number;
  epoch?: number;
  /**
   * Why this site cannot serve the namespace's reads and crypto now (its NetHSM Locked, unreachable or not
   * Operational, and its gateway not serving from a peer instead); absent when it can. `/replica/<ns>` answers 503.
   */
  unavailable?: string;
}

export interface HealthSource {
  /**
   * Readiness of the whole site. The server answers 200 only when `ready` is true and every check is ok.
   * May reject or hang: the server turns both into a 503 (bounded by its readiness timeout).
   */
  ready(): Promise<Readiness>;
  /** The namespace's role here, or undefined for a namespace this site does not replicate. Must not throw. */
  namespaceRole(namespace: string): NamespaceHealth | undefined;
}
