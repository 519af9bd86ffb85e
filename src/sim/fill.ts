/**
 * Bulk fill (`sim --fill <ns>:<count>[:<seed>]`): puts `count` EC P-256 keys into a namespace in one step, for benches
 * that need a device of a million keys (through the API that takes hours). The keys are what an import makes: the
 * record an import of the same scalar stores (`importKeyJson`), sealed with the key store key under its own path, so
 * the simulator serves them exactly as imported keys (GET /keys, /keys/{id}, public.pem, cert 404, sign, backup).
 *
 * What is not as on a device: the key material. FILL_PAIRS scalars are derived from the seed and reused round-robin
 * under distinct ids (`f00000000`, `f00000001`, …), so two simulators filled with the same spec hold identical keys.
 */
import { createHash } from 'node:crypto';
import { isValidId } from '../nethsm/ids.js';
import { importKeyJson } from './keys/import.js';
import { encodeKeyRecord } from './keys/record.js';
import { keyPath } from './key-store.js';
import type { SimCore } from './context.js';

/** At most this many keys per fill: ids are `f` + 8 digits. */
export const MAX_FILL_COUNT = 10_000_000;
/** Distinct key pairs per seed, reused round-robin. */
export const FILL_PAIRS = 16;
const DEFAULT_SEED = 'fill';
const SEED_RE = /^[a-zA-Z0-9_.-]{1,64}$/;

export interface FillSpec {
  namespace: string;
  count: number;
  seed: string;
}

export interface FillResult {
  /** Keys written. */
  added: number;
  /** Fill ids that already held a key, left as they were. */
  kept: number;
  ms: number;
}

/** Parses `<ns>:<count>[:<seed>]`; throws Error naming the bad part. Pure. */
export function parseFillSpec(spec: string): FillSpec {
  const parts = spec.split(':');
  if (parts.length < 2 || parts.length > 3) throw new Error(`"${spec}" is not <namespace>:<count>[:<seed>]`);
  const [namespace, count, seed = DEFAULT_SEED] = parts as [string, string, string?];
  if (!isValidId(namespace)) throw new Error(`"${spec}": namespace "${namespace}" is not a NetHSM id ([a-zA-Z0-9][a-zA-Z0-9_.-]*, 1 to 128 characters)`);
  if (!/^\d{1,8}$/.test(count) || Number(count) < 1 || Number(count) > MAX_FILL_COUNT) {
    throw new Error(`"${spec}": count must be a whole number from 1 to ${MAX_FILL_COUNT}, got "${count}"`);
  }
  if (!SEED_RE.test(seed)) throw new Error(`"${spec}": seed must be 1 to 64 characters of [a-zA-Z0-9_.-], got "${seed}"`);
  return { namespace, count: Number(count), seed };
}

/** The id of the i-th fill key. */
export function fillKeyId(i: number): string {
  return `f${String(i).padStart(8, '0')}`;
}

/** P-256 order: a derived scalar must lie in [1, n-1]. */
const P256_N = 0xffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551n;

/** The j-th scalar of a seed: SHA-256 chained until it is a valid P-256 private key (almost always the first). */
function scalarOf(seed: string, j: number): Buffer {
  let d = createHash('sha256').update(`nethsm-sim fill ${seed} ${j}`).digest();
  while (BigInt(`0x${d.toString('hex')}`) === 0n || BigInt(`0x${d.toString('hex')}`) >= P256_N) d = createHash('sha256').update(d).digest();
  return d;
}

/**
 * Copies sealed values into shared 1 MiB slabs: a million separately allocated ~330-byte buffers cost the simulator
 * ~1 KB of RSS each (allocator overhead and fragmentation), a slab slice ~330 bytes.
 */
class Slabs {
  private slab = Buffer.allocUnsafeSlow(0);
  private used = 0;

  keep(b: Buffer): Buffer {
    if (this.used + b.length > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(Math.max(1 << 20, b.length));
      this.used = 0;
    }
    b.copy(this.slab, this.used);
    const out = this.slab.subarray(this.used, this.used + b.length);
    this.used += b.length;
    return out;
  }
}

/** The encoded key records (firmware key JSON) of a seed's FILL_PAIRS keys, as an import of each scalar stores them. */
function fillRecords(seed: string): Buffer[] {
  return Array.from({ length: FILL_PAIRS }, (_, j) => {
    const d = scalarOf(seed, j);
    try {
      const { record } = importKeyJson({ type: 'EC_P256', mechanisms: ['ECDSA_Signature'], private: { data: d.toString('base64') } });
      return encodeKeyRecord(record);
    } finally {
      d.fill(0);
    }
  });
}

/** Keys sealed and stored per KV batch; between batches the simulator serves requests (a fill takes ~25 s a million). */
const FILL_CHUNK = 5000;

/**
 * Fills `spec.namespace` with keys `f00000000` … up to `spec.count` ids (ids that already hold a key are kept as they
 * are), FILL_CHUNK keys per KV batch, yielding to the event loop between batches so the simulator keeps answering
 * (health probes of a daemon watching it). Rejects with Error, nothing written, when the device is not Operational or
 * the namespace does not exist; a device locked or the namespace deleted meanwhile stops the fill there.
 */
export async function fillNamespace(sim: SimCore, spec: FillSpec): Promise<FillResult> {
  const t0 = performance.now();
  const ready = (): void => {
    if (!sim.device.hasDomainKey()) throw new Error(`cannot fill ${spec.namespace}: the device is not Operational`);
    if (!sim.namespaces.exists(spec.namespace)) throw new Error(`cannot fill ${spec.namespace}: namespace "${spec.namespace}" does not exist`);
  };
  ready();
  const records = fillRecords(spec.seed);
  const slabs = new Slabs();
  let [added, kept] = [0, 0];
  try {
    for (let from = 0; from < spec.count; from += FILL_CHUNK) {
      if (from > 0) {
        await new Promise((r) => setImmediate(r));
        ready();
      }
      const sets: [string, Buffer][] = [];
      for (let i = from; i < Math.min(spec.count, from + FILL_CHUNK); i++) {
        const p = keyPath(spec.namespace, fillKeyId(i));
        if (sim.device.kv.has(p)) kept++;
        else sets.push([p, slabs.keep(sim.device.seal(p, 'key_store', records[i % FILL_PAIRS]!))]);
      }
      if (sets.length > 0) sim.device.kv.batch(sets);
      added += sets.length;
    }
  } finally {
    for (const r of records) r.fill(0);
  }
  return { added, kept, ms: performance.now() - t0 };
}
