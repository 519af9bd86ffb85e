/**
 * One forwarded request and its answer, relayed straight into the client's response. An undici dispatch handler: the
 * gateway's hot path (every sign, decrypt and read) builds no response stream, no stream pipeline and no abort signal
 * per request (a `stream.pipeline` alone built an AbortError with a stack trace for every answer it finished).
 *
 * The answer's head is handed over first, as a promise, so the gateway can record a change before the client sees it.
 * Body bytes that arrive before the caller says where they go are held, up to HOLD_BYTES, and then the NetHSM
 * connection is paused; once they go to the client they flow with its backpressure (paused while the client's socket
 * is full).
 */
import type { ServerResponse } from 'node:http';
import type { Dispatcher } from 'undici';

export interface RelayHead {
  statusCode: number;
  /** As undici parses them: lower-case names; repeated headers as arrays. */
  headers: Record<string, string | string[] | undefined>;
}

/** Body bytes held while the caller decides (it is awaiting a change-capture call); then reading pauses. */
const HOLD_BYTES = 64 * 1024;

export class Relay implements Dispatcher.DispatchHandler {
  /** The answer's status and headers; rejects with undici's error when none came (connect, TLS, timeout, abort). */
  readonly head: Promise<RelayHead>;
  #resolveHead!: (head: RelayHead) => void;
  #rejectHead!: (err: Error) => void;
  #controller: Dispatcher.DispatchController | undefined;
  /** An abort asked for before undici handed over the controller (the request was still queued). */
  #abortReason: Error | undefined;
  #started = false;
  #ended = false;
  #failure: Error | undefined;
  /** undefined: not decided yet (bytes are held); null: discarded; else the client's response. */
  #sink: ServerResponse | null | undefined;
  #held: Buffer[] = [];
  #heldBytes = 0;
  #pausedForHold = false;
  #pausedForDrain = false;
  #settle: { resolve: () => void; reject: (err: Error) => void } | undefined;

  constructor() {
    this.head = new Promise<RelayHead>((resolve, reject) => {
      this.#resolveHead = resolve;
      this.#rejectHead = reject;
    });
  }

  /** Cuts the exchange (the client went away, or the answer could not be written). No-op once it has ended. */
  abort(reason: Error): void {
    if (this.#ended || this.#failure !== undefined) return;
    if (this.#controller !== undefined) this.#controller.abort(reason);
    else this.#abortReason ??= reason;
  }

  /**
   * Sends the body into `res`, whose head the caller has written, and ends it. Resolves once `res.end()` was called;
   * rejects with the cause when the answer was cut (then `res` is left to the caller). Call at most once, after `head`.
   */
  pipeTo(res: ServerResponse): Promise<void> {
    return this.#flow(res);
  }

  /** Reads the body to its end and drops it. Same settling as pipeTo. */
  discard(): Promise<void> {
    return this.#flow(null);
  }

  #flow(sink: ServerResponse | null): Promise<void> {
    if (this.#failure !== undefined) return Promise.reject(this.#failure);
    let settle!: { resolve: () => void; reject: (err: Error) => void };
    const done = new Promise<void>((resolve, reject) => (settle = { resolve, reject }));
    this.#settle = settle;
    this.#sink = sink;
    const held = this.#held;
    this.#held = [];
    this.#heldBytes = 0;
    if (this.#ended && held.length === 1 && sink !== null && !sink.destroyed) {
      // The usual small answer, whole before the head was written: one end(chunk), no write() (which corks the socket
      // and schedules a tick to uncork it) before it.
      sink.end(held[0]);
      this.#settle.resolve();
      return done;
    }
    for (const chunk of held) this.#write(chunk);
    if (this.#ended) {
      this.#finish();
    } else if (this.#pausedForHold) {
      this.#pausedForHold = false;
      if (!this.#pausedForDrain) this.#controller?.resume();
    }
    return done;
  }

  #write(chunk: Buffer): void {
    const sink = this.#sink;
    if (!sink || sink.destroyed) return;
    if (!sink.write(chunk) && !this.#pausedForDrain) {
      this.#pausedForDrain = true;
      this.#controller?.pause();
      sink.once('drain', this.#onDrain);
    }
  }

  readonly #onDrain = (): void => {
    this.#pausedForDrain = false;
    if (!this.#ended && this.#failure === undefined) this.#controller?.resume();
  };

  #finish(): void {
    this.#sink?.end();
    this.#settle?.resolve();
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    if (this.#abortReason !== undefined) controller.abort(this.#abortReason);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: RelayHead['headers']): void {
    this.#started = true;
    this.#resolveHead({ statusCode, headers });
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#sink !== undefined) {
      this.#write(chunk);
      return;
    }
    this.#held.push(chunk);
    this.#heldBytes += chunk.length;
    if (this.#heldBytes >= HOLD_BYTES && !this.#pausedForHold) {
      this.#pausedForHold = true;
      controller.pause();
    }
  }

  onResponseEnd(): void {
    this.#ended = true;
    if (this.#sink !== undefined) this.#finish();
  }

  onResponseError(_controller: Dispatcher.DispatchController, err: Error): void {
    if (!this.#started) {
      this.#rejectHead(err);
      return;
    }
    this.#failure = err;
    this.#held = [];
    this.#settle?.reject(err);
  }
}
