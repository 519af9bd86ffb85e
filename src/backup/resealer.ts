/**
 * One worker thread that re-seals batches of backup entry fields (reseal-worker.ts) so a merge's AES-GCM work runs
 * beside the event loop. The daemon owns one (started with it: a thread's start-up costs tens of ms of CPU, as much as
 * a tenth of a 20k-key merge; closed with it); a merge without one creates its own once it fills a batch and closes it
 * after. Each batch carries its keys as KeyObjects (cloned in-process, never serialised to disk), so one thread serves
 * any merge. A thread that dies fails every batch in flight and every later one (no hang), and is told to `onDied`
 * (the daemon's metric and warn log: otherwise only the failed merge would show it); closing it is not a death.
 */
import { Worker } from 'node:worker_threads';
import { InternalError } from '../errors.js';
import { RESEAL_WORKER_ROLE, type ResealKeys, type ResealReply, type ResealRequest, type ResealResult } from './reseal-worker.js';

/** The worker's entry: the compiled module next to this one, or (tests run the sources) the TypeScript one. */
const WORKER_URL = new URL(import.meta.url.endsWith('.ts') ? './reseal-worker.ts' : './reseal-worker.js', import.meta.url);

export interface ResealBatch {
  /** Sealed fields back to back; transferred to the thread and returned re-sealed in place (the caller's is emptied). */
  fields: Buffer;
  lengths: Uint32Array;
  keyOf: Uint8Array;
}

export interface ResealerOptions {
  /**
   * Called once per thread that dies (an uncaught error in it, or it exited: killed, out of memory), with the
   * InternalError its batches failed with (the cause is Node's: no key, no entry content). Not called for close().
   */
  onDied?: (err: Error) => void;
}

export class Resealer {
  constructor(private readonly options: ResealerOptions = {}) {}

  /** The thread; exposed for the crash test. Undefined until start(). */
  worker: Worker | undefined;
  private nextId = 0;
  private readonly waiting = new Map<number, { resolve: (r: { fields: Buffer; result: ResealResult }) => void; reject: (e: unknown) => void }>();
  private failure: Error | undefined;
  private closed = false;
  private online = false;

  /**
   * Starts the thread. Idempotent while it runs; after it died, starts a new one (the batches the old one held have
   * failed). A no-op after close().
   */
  start(): void {
    if (this.worker !== undefined || this.closed) return;
    const w = new Worker(WORKER_URL, { workerData: { role: RESEAL_WORKER_ROLE } });
    this.worker = w;
    this.failure = undefined;
    w.once('online', () => {
      this.online = true;
    });
    w.on('message', (m: ResealReply) => {
      const p = this.waiting.get(m.id);
      this.waiting.delete(m.id);
      p?.resolve({ fields: Buffer.from(m.fields.buffer, m.fields.byteOffset, m.fields.byteLength), result: m.result });
    });
    // The error's message is Node's or a stack from our module: it names no key and no entry content.
    w.on('error', (err) => this.died(w, new InternalError('the merge\'s re-seal worker thread failed', { cause: err })));
    w.on('exit', (code) => this.died(w, new InternalError(`the merge's re-seal worker thread exited (code ${code})`)));
  }

  /**
   * Whether the thread has started running (and has not failed or been closed): until then a batch sent would only
   * wait for it (its start-up takes tens of ms), so a caller that can do the work itself does.
   */
  get ready(): boolean {
    return this.online && !this.closed && this.failure === undefined;
  }

  /** Re-seals `b` under `keys` on the thread (start() first). Rejects with InternalError when the thread died or was closed. */
  reseal(keys: ResealKeys, b: ResealBatch): Promise<{ fields: Buffer; result: ResealResult }> {
    const w = this.worker;
    if (w === undefined || this.closed) return Promise.reject(this.failure ?? new InternalError('Resealer.reseal() before start() or after close()'));
    const id = this.nextId++;
    // Only a buffer that is its whole ArrayBuffer can be transferred (not a slice of Node's shared pool): copy others.
    const whole = b.fields.byteOffset === 0 && b.fields.byteLength === b.fields.buffer.byteLength;
    const fields = whole ? new Uint8Array(b.fields.buffer, 0, b.fields.byteLength) : Uint8Array.from(b.fields);
    const req: ResealRequest = { id, keys, fields, lengths: b.lengths, keyOf: b.keyOf };
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      w.postMessage(req, [fields.buffer as ArrayBuffer]);
    });
  }

  /** Ends the thread; batches still in flight reject. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.fail(new InternalError('the merge\'s re-seal worker thread was closed'));
    await this.worker?.terminate();
  }

  /** The thread `w` failed or exited: its batches fail (an old thread's late 'exit' touches nothing of a new one's). */
  private died(w: Worker, err: Error): void {
    if (this.worker !== w) return;
    this.fail(err);
    this.worker = undefined;
    this.online = false;
    // close() terminates the thread on purpose: its 'exit' is not a death.
    if (!this.closed) this.options.onDied?.(err);
  }

  private fail(err: Error): void {
    this.failure ??= err;
    for (const p of this.waiting.values()) p.reject(this.failure);
    this.waiting.clear();
  }
}
