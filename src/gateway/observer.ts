/**
 * The change-capture hook (streaming issue): the gateway calls it around every mutation it forwards for a namespace that
 * is primary here, so the daemon can record an intent before the NetHSM acts and commit or drop it after.
 */
/**
 * A mutation's request body, shown to the observer only for key calls that carry one (import, generate, cert, label,
 * move). The gateway reads every locally forwarded write's body whole (bounded) before the write passes the gate.
 */
export interface MutationBody {
  contentType: string | undefined;
  /** Exactly the bytes forwarded to the NetHSM. Zeroed by the gateway once `end` has returned: copy what you keep. */
  bytes: Buffer;
  /** The parsed body when `contentType` is JSON and it parses; holds key material for imports (never log it). */
  json?: unknown;
}

export interface MutationStart {
  namespace: string;
  /** HTTP method as received. */
  method: string;
  /** Path below `/api/v1`, decoded, without query: `/keys/k1/cert`. */
  path: string;
  /** Operation template from classify(): `PUT /keys/{id}/cert`. */
  operation: string;
  keyId?: string;
  /** The Basic-auth user id (`ns~admin`); never the password. */
  user: string;
  /** See MutationBody; absent for calls without a body and for calls other than the key calls named there. */
  body?: MutationBody;
}

export interface MutationOutcome {
  /** The NetHSM's status; 2xx = committed. `0` = no answer (connection lost): the outcome is unknown, ask the device. */
  status: number;
  /** The `Location` header of a create (`/api/v1/keys/<id>`), when the NetHSM sent one. */
  location?: string;
}

/**
 * A request the gateway sends to the NetHSM in place of the client's (replicated generation: the daemon makes the key
 * and imports it), with the answer the client gets when the NetHSM accepts it. The NetHSM's refusal passes through.
 */
export interface Substitution {
  method: string;
  /** Below `/api/v1`, percent-encoded. */
  path: string;
  /** The substituted call's operation template, as classify() names it (the observer sees it instead of the client's). */
  operation: string;
  keyId?: string;
  contentType: string;
  /** Zeroed by the gateway once forwarded (it may hold key material). */
  body: Buffer;
  answer: { status: number; headers: Record<string, string>; body: Buffer };
}

/**
 * What the observer recorded for a mutation (`end`'s answer), so the gateway can tell a merge-restore that raced the
 * write how to make it good (the barrier's WriteTicket):
 * - `change`: committed as `namespace`'s change `seq`; `replayable` when that change can be re-applied from the change
 *   log alone (not a catch-up; an import carries an envelope sealed to this site's own transport key);
 * - `dropped`: the intent was dropped as not done (a refusal, or the device showed a lost answer did not take effect);
 * - `unknown`: nothing can be said (the device could not settle a lost answer yet; the intent was settled elsewhere).
 */
export type MutationEnd =
  | { readonly recorded: 'change'; readonly namespace: string; readonly seq: number; readonly replayable: boolean }
  | { readonly recorded: 'dropped' }
  | { readonly recorded: 'unknown' };

/** Key locks taken by `MutationObserver.lockKeys`. */
export interface KeyHold {
  /** Lets the keys go, unless `begin` took the hold over (then a no-op). Idempotent. */
  release(): void;
}

export interface BeginOptions {
  /** What `lockKeys` returned for this write. */
  held?: KeyHold;
  /** The caller holds the device barrier (shared): never wait for a key lock. */
  inBarrier?: boolean;
}

export interface MutationObserver {
  /**
   * Optional: replaces the client's mutation by another request (called before `begin`, only for calls whose body was
   * captured). Returns undefined to forward the client's own request. A throw carrying a numeric `status` (4xx) is
   * answered to the client with that status and the error's message, NetHSM-style; nothing is forwarded.
   */
  substitute?(m: MutationStart): Promise<Substitution | undefined>;
  /**
   * Optional: takes the per-key locks `m` will need (its key, a move's new id, a generate's requested id), waiting
   * while another write to one of them is in flight, until `signal` aborts (then rejects with its reason, holding
   * nothing). The gateway calls it BEFORE the write waits at the device barrier and hands the hold to `begin`, so writes
   * queued on one key wait outside the barrier (docs/concurrency.md, "Lock order"). The caller releases the hold on
   * every path on which `begin` did not take it over.
   */
  lockKeys?(m: MutationStart, signal?: AbortSignal): Promise<KeyHold>;
  /**
   * Called before forwarding; may throw to refuse the mutation (the gateway answers 503). Returns an opaque intent id.
   * With `options.held` it takes that hold over (its release becomes a no-op; `end` lets the keys go). With
   * `options.inBarrier` the caller holds the device barrier: `begin` then never waits for a key lock; a key it needs and
   * does not hold is taken only if free, and the mutation refused otherwise.
   */
  begin(m: MutationStart, options?: BeginOptions): Promise<string>;
  /**
   * Called once the NetHSM has answered (before the client sees the answer), or with status 0 when it never did.
   * A throw is logged; the client still gets the NetHSM's answer and the intent stays open for recovery. Resolves
   * with what was recorded (MutationEnd); an observer that says nothing leaves the write not re-appliable.
   */
  end(intentId: string, outcome: MutationOutcome): Promise<MutationEnd | undefined>;
}

/** The observer's view of a buffered body: the bytes as they will be forwarded, and the parsed JSON when it is JSON. */
export function mutationBody(bytes: Buffer, contentType: string | undefined): MutationBody {
  const out: MutationBody = { contentType, bytes };
  if (contentType !== undefined && /^application\/json\b/i.test(contentType)) {
    try {
      out.json = JSON.parse(bytes.toString('utf8')) as unknown;
    } catch {
      // The NetHSM answers malformed JSON with 400; the observer sees no parsed body.
    }
  }
  return out;
}
