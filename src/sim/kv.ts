/**
 * The simulator's key-value store: path → raw value, exactly what the firmware keeps in etcd.
 * Memory-only, or persisted to `<dataDir>/kv.json` with atomic, debounced writes (flushed on close). With `durable`,
 * every change is written (atomically, synchronously) before the call that made it returns, so a request's answer is
 * sent only after its effect is on disk: a SIGKILL then loses nothing acknowledged, as on an appliance whose etcd
 * commits before it answers. Fault-injection runs kill simulators and need that.
 */
import { renameSync, writeFileSync } from 'node:fs';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

const PERSIST_DELAY_MS = 50;

export class KvStore {
  private readonly map = new Map<string, Buffer>();
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  /** Number of writes and deletes since start (exported as the `kv write` metric). */
  writes = 0;

  private constructor(
    private readonly file: string | undefined,
    private readonly durable = false,
  ) {}

  /**
   * Opens the store; with a dataDir, loads `kv.json` when it exists. Throws when the file is not a KV dump.
   * `durable`: write each change before returning from it (see the module comment); ignored without a dataDir.
   */
  static async open(dataDir?: string, options: { durable?: boolean } = {}): Promise<KvStore> {
    if (dataDir === undefined) return new KvStore(undefined);
    await mkdir(dataDir, { recursive: true });
    const store = new KvStore(path.join(dataDir, 'kv.json'), options.durable === true);
    let text: string | undefined;
    try {
      text = await readFile(store.file!, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    if (text !== undefined) {
      const obj = JSON.parse(text) as unknown;
      if (typeof obj !== 'object' || obj === null || Array.isArray(obj)) throw new Error(`${store.file} is not a simulator KV dump`);
      for (const [k, v] of Object.entries(obj)) {
        if (typeof v !== 'string') throw new Error(`${store.file}: value of ${k} is not base64`);
        store.map.set(k, Buffer.from(v, 'base64'));
      }
    }
    return store;
  }

  get(p: string): Buffer | undefined {
    return this.map.get(p);
  }

  has(p: string): boolean {
    return this.map.has(p);
  }

  set(p: string, value: Buffer): void {
    this.map.set(p, value);
    this.changed();
  }

  delete(p: string): boolean {
    const had = this.map.delete(p);
    if (had) this.changed();
    return had;
  }

  /** Paths starting with `prefix`, unsorted. */
  pathsUnder(prefix: string): string[] {
    const out: string[] = [];
    for (const k of this.map.keys()) if (k.startsWith(prefix)) out.push(k);
    return out;
  }

  /** Every path, unsorted. */
  paths(): string[] {
    return [...this.map.keys()];
  }

  /** Removes every entry (a factory reset's reformatted data partition). */
  clear(): void {
    this.map.clear();
    this.changed();
  }

  /** Applies many sets and deletes as one change (one persistence write). */
  batch(sets: Iterable<[string, Buffer]>, deletes: Iterable<string> = []): void {
    for (const p of deletes) this.map.delete(p);
    for (const [p, v] of sets) this.map.set(p, v);
    this.changed();
  }

  private changed(): void {
    this.writes++;
    if (this.file === undefined) return;
    this.dirty = true;
    if (this.durable) {
      this.writeNow(this.file);
      return;
    }
    if (this.timer === undefined) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, PERSIST_DELAY_MS);
    }
  }

  /** Writes pending changes (temp file + rename). Idempotent; resolves when the file is on disk. */
  async flush(): Promise<void> {
    if (this.timer !== undefined) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const file = this.file;
    if (file === undefined) return;
    this.writing = this.writing.then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      const tmp = `${file}.${process.pid}.tmp`;
      await writeFile(tmp, this.dump(), { mode: 0o600 });
      await rename(tmp, file);
    });
    return this.writing;
  }

  /** The durable path: the whole map, written and renamed into place before the caller continues. */
  private writeNow(file: string): void {
    this.dirty = false;
    const tmp = `${file}.${process.pid}.sync.tmp`;
    writeFileSync(tmp, this.dump(), { mode: 0o600 });
    renameSync(tmp, file);
  }

  private dump(): string {
    const obj: Record<string, string> = {};
    for (const [k, v] of this.map) obj[k] = v.toString('base64');
    return JSON.stringify(obj);
  }
}
