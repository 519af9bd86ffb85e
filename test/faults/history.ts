/**
 * The history of a fault run: one JSON object per line, appended synchronously as things happen (so a run that dies
 * still leaves what it did). The checker reads it back; the self-test builds one by hand.
 *
 * Times are milliseconds since the Unix epoch from the runner's clock, which is also the daemons' clock (one machine).
 */
import { appendFileSync, readFileSync, writeFileSync } from 'node:fs';

/** `ack`: 2xx. `refused`: a definite failure the application sees (4xx, 503). `unknown`: timeout, cut connection, 500/502/504. */
export type Outcome = 'ack' | 'refused' | 'unknown';

export type OpKind = 'import' | 'generate' | 'delete' | 'tag' | 'cert';

/** One client request through a site's gateway, as the application saw it. */
export interface OpRecord {
  type: 'op';
  /** Sequence number within the run. */
  id: number;
  /** `w0`…, or `slow` for the nemesis's slow clients. */
  worker: string;
  /** The site whose gateway got the request. */
  site: string;
  ns: string;
  kind: OpKind;
  key: string;
  start: number;
  end: number;
  outcome: Outcome;
  /** The HTTP status when an answer came. */
  status?: number;
  /** Why it was refused or unknown (error code / message, short). */
  error?: string;
  /** Creates: SHA-256 (hex) of the key's SubjectPublicKeyInfo DER. Imports know it up front; generates read it back. */
  pub?: string;
  /** `tag`: the tag added. */
  tag?: string;
  /** `cert`: SHA-256 (hex) of the certificate bytes. */
  cert?: string;
  /** The body was trickled by a slow client. */
  slow?: boolean;
}

export type FaultKind =
  | 'partition'
  | 'partition-oneway'
  | 'partition-gateway'
  | 'partition-device'
  | 'kill-daemon'
  | 'kill-sim'
  | 'pause-daemon'
  | 'pause-sim'
  | 'lock-device'
  | 'slow-client'
  | 'promote'
  | 'promote-force'
  | 'demote'
  | 'sync-other'
  | EtcdFaultKind;

/**
 * The automatic-failover scenarios (`--etcd` only), each aimed at the believed primary of a namespace:
 * `lose-site`        its daemon, NetHSM and etcd member killed; a replica must promote within TTL + bound; then the
 *                    site returns and must be fenced under the new primary;
 * `isolate-primary`  its site cut off from the etcd majority and from the other daemons (clients still reach its
 *                    gateway): it must step down before another site promotes; then heal and return (fenced);
 * `kill-witness`     the witness member killed for at least two lease TTLs: no role may change;
 * `kill-etcd-member` one site's etcd member killed (its daemon still reaches the others): no role may change.
 */
export type EtcdFaultKind = 'lose-site' | 'isolate-primary' | 'kill-witness' | 'kill-etcd-member';
export const ETCD_FAULT_KINDS: readonly EtcdFaultKind[] = ['lose-site', 'isolate-primary', 'kill-witness', 'kill-etcd-member'];

export const FAULT_KINDS: readonly FaultKind[] = [
  'partition',
  'partition-oneway',
  'partition-gateway',
  'partition-device',
  'kill-daemon',
  'kill-sim',
  'pause-daemon',
  'pause-sim',
  'lock-device',
  'slow-client',
  'promote',
  'promote-force',
  'demote',
  'sync-other',
];

/** Every kind a report counts (the classic ones and the etcd scenarios). */
export const ALL_FAULT_KINDS: readonly FaultKind[] = [...FAULT_KINDS, ...ETCD_FAULT_KINDS];

/** One nemesis action, from its start to its end (the fault healed, or the operator command finished). */
export interface FaultRecord {
  type: 'fault';
  /** Index in the plan. */
  step: number;
  kind: FaultKind;
  /** What it hit, e.g. `a→b`, `daemon b`, `beta@a`. */
  target: string;
  start: number;
  end: number;
  /** Whether it was carried out as planned (a promote the daemon refused is `ok: false`, still recorded). */
  ok: boolean;
  detail: string;
  /** Timings the etcd scenarios measured (ms from the fault's start): step-down, promotion, the old primary fenced. */
  measured?: { steppedDownMs?: number; promotedMs?: number; fencedMs?: number };
  /** An etcd scenario's broken promise (the checker reports it as a `failover` finding). */
  violation?: string;
}

/** A change of one site's role for one namespace, as its status said (sampled about once a second). */
export interface RoleRecord {
  type: 'role';
  at: number;
  site: string;
  ns: string;
  role: 'primary' | 'replica' | 'fenced';
  epoch: number;
  primarySite: string;
}

export interface MetaRecord {
  type: 'meta';
  seed: number;
  minutes: number;
  sites: string[];
  namespaces: { name: string; primary: string; generate: string }[];
  /** How partitions are made, e.g. `userland TCP proxy (black-hole)`. */
  mechanism: string;
  startedAt: number;
  /** `automatic`: an `--etcd` run (every namespace on automatic failover), with its lease TTL and safety margin. */
  failover?: 'automatic';
  leaseTtlMs?: number;
  safetyMarginMs?: number;
}

export type HistoryRecord = OpRecord | FaultRecord | RoleRecord | MetaRecord;

/** Appends records to a JSON-lines file, synchronously. */
export class HistoryWriter {
  #nextOp = 0;

  constructor(readonly file: string) {
    writeFileSync(file, '');
  }

  nextOpId(): number {
    return this.#nextOp++;
  }

  append(record: HistoryRecord): void {
    appendFileSync(this.file, `${JSON.stringify(record)}\n`);
  }
}

/** Reads a history file; throws naming the line that is not a record. */
export function readHistory(file: string): HistoryRecord[] {
  const out: HistoryRecord[] = [];
  readFileSync(file, 'utf8')
    .split('\n')
    .forEach((line, i) => {
      if (line.trim() === '') return;
      let r: unknown;
      try {
        r = JSON.parse(line);
      } catch {
        throw new Error(`${file}:${i + 1}: not JSON`);
      }
      const type = (r as { type?: unknown } | null)?.type;
      if (type !== 'op' && type !== 'fault' && type !== 'role' && type !== 'meta') throw new Error(`${file}:${i + 1}: unknown record type ${String(type)}`);
      out.push(r as HistoryRecord);
    });
  return out;
}
