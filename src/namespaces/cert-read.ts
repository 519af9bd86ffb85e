/**
 * One anti-entropy read of a namespace with the certificate table (`key_certs`, src/state/key-certs-repo.ts): which
 * keys' certificates the read may take from the table (one device request, `GET /keys/{id}`) and which it must read
 * from the device (two), and the table's rows learnt from those full reads. docs/anti-entropy.md, "The certificate
 * table".
 *
 * A key's certificate is read from the device when the table has no row for it, when the daemon wrote the key since
 * the row was loaded (KeyCertsRepo.forget), and when the key is in this read's scrub slice: the keys whose
 * sha256(namespace/id) falls in bucket `read number mod scrubPasses`, so every key's certificate is read from the device
 * at least once every `scrubPasses` reads of the namespace at this site.
 */
import { hash } from 'node:crypto';
import type { KeyCertsRepo, KnownCert } from '../state/key-certs-repo.js';
import type { KeyInventoryItem } from './inventory.js';

const PAGE = 1024;
const LEARN_BATCH = 512;

export interface CertReadCounts {
  /** Keys whose certificate came from the table. */
  fromTable: number;
  /** Keys read in full (certificate and key) because the table had no row the read could trust. */
  unknown: number;
  /** Keys read in full because they were in this read's scrub slice. */
  scrubbed: number;
}

export class CertRead {
  readonly counts: CertReadCounts = { fromTable: 0, unknown: 0, scrubbed: 0 };
  readonly #readNo: number;
  readonly #end: () => void;
  #rows: KnownCert[] = [];
  #pos = 0;
  #pageMark = 0;
  #exhausted = false;
  #learnt: (KnownCert & { mark: number })[] = [];

  /** Starts a read of `namespace` (counts it: the scrub slice moves on). `scrubPasses` ≥ 1; 1 reads every cert. */
  constructor(
    private readonly repo: KeyCertsRepo,
    private readonly namespace: string,
    private readonly scrubPasses: number,
  ) {
    this.#readNo = repo.nextRead(namespace);
    this.#end = repo.beginRead();
  }

  /**
   * The certificate the read may take from the table for `id` (null: none), or undefined when it must read it.
   * Ids must come in increasing order (as readItems asks). The answer is good only if `stillTrusted` holds after the
   * key was read.
   */
  known(id: string): { cert: { cert: string; certType: string } | null; mark: number } | undefined {
    const row = this.#row(id);
    if (row && this.#scrubDue(id)) {
      this.counts.scrubbed++;
      return undefined;
    }
    if (!row || this.repo.forgottenSince(this.namespace, id, this.#pageMark)) {
      this.counts.unknown++;
      return undefined;
    }
    this.counts.fromTable++;
    return { cert: row.cert === '' ? null : { cert: row.cert, certType: row.certType }, mark: this.#pageMark };
  }

  /** False when the daemon wrote the key since `mark`: the table's answer may be older than the key read. */
  stillTrusted(id: string, mark: number): boolean {
    return !this.repo.forgottenSince(this.namespace, id, mark);
  }

  /** The moment before a full read: pass to `learnt`. */
  mark(): number {
    return this.repo.mark();
  }

  /** A full read's result, written to the table in batches (unless the key was forgotten since `mark`). */
  learnt(item: KeyInventoryItem, mark: number): void {
    this.#learnt.push({ id: item.id, cert: item.cert, certType: item.certType, mark });
    if (this.#learnt.length >= LEARN_BATCH) this.flush();
  }

  flush(): void {
    if (this.#learnt.length === 0) return;
    const rows = this.#learnt;
    this.#learnt = [];
    this.repo.learn(this.namespace, rows);
  }

  /** Writes what is left and ends the read. Idempotent. */
  end(): void {
    try {
      this.flush();
    } finally {
      this.#end();
    }
  }

  #row(id: string): KnownCert | undefined {
    while (this.#pos < this.#rows.length && this.#rows[this.#pos]!.id < id) this.#pos++;
    if (this.#pos >= this.#rows.length && !this.#exhausted) {
      this.#pageMark = this.repo.mark();
      this.#rows = this.repo.page(this.namespace, id, PAGE);
      this.#pos = 0;
      this.#exhausted = this.#rows.length < PAGE;
    }
    const r = this.#rows[this.#pos];
    return r?.id === id ? r : undefined;
  }

  #scrubDue(id: string): boolean {
    if (this.scrubPasses <= 1) return true;
    const bucket = hash('sha256', `${this.namespace}/${id}`, 'buffer').readUInt32BE(0) % this.scrubPasses;
    return bucket === this.#readNo % this.scrubPasses;
  }
}

/**
 * The keys whose certificate a change of this kind may change, or whose id it may give to another key: every kind but
 * tag and label changes (which leave the certificate alone). These are what a writer forgets in the table.
 */
export function certKeysOf(kind: string, keyId: string | undefined, newId?: string): string[] {
  if (kind.startsWith('tag-') || kind.startsWith('label-')) return [];
  return [keyId, newId].filter((k): k is string => k !== undefined);
}
