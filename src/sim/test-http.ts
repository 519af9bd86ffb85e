/**
 * Raw HTTPS requests against a simulator for tests: full control over method, headers and body, and the raw answer.
 * Not for production code (use the NetHSM client there).
 */
import { Agent, FormData, request } from 'undici';
import type { Cred } from './fixture.js';

export interface RawResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  text: string;
  json(): unknown;
}

export interface RawOptions {
  auth?: Cred;
  /** JSON-encodes and sets Content-Type: application/json (unless headers override it). */
  json?: unknown;
  body?: string | Buffer;
  headers?: Record<string, string>;
}

export class TestHttp {
  private readonly agent: Agent;

  /** Trusts the simulator's current certificate, or any certificate with `insecure` (for tests that change it). */
  constructor(
    private readonly sim: { apiUrl: string; certPem: string },
    opts: { insecure?: boolean } = {},
  ) {
    this.agent = new Agent({ connect: opts.insecure === true ? { rejectUnauthorized: false } : { ca: sim.certPem } });
  }

  async req(method: string, path: string, opts: RawOptions = {}): Promise<RawResponse> {
    const headers: Record<string, string> = {};
    if (opts.auth) headers['authorization'] = basic(opts.auth);
    let body: string | Buffer | undefined = opts.body;
    if (opts.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(opts.json);
    }
    Object.assign(headers, opts.headers);
    const res = await request(this.sim.apiUrl + path, { method: method as 'GET', headers, body, dispatcher: this.agent });
    const buf = Buffer.from(await res.body.arrayBuffer());
    const text = buf.toString('utf8');
    return { status: res.statusCode, headers: res.headers, body: buf, text, json: () => JSON.parse(text) as unknown };
  }

  /** `POST /system/restore` with parts `arguments` (JSON, or raw text) and `backup`. */
  async restore(backup: Buffer, args: unknown = {}, auth?: Cred): Promise<RawResponse> {
    const form = new FormData();
    form.append('arguments', typeof args === 'string' ? args : JSON.stringify(args));
    form.append('backup', new Blob([new Uint8Array(backup)]), 'backup.bin');
    const headers: Record<string, string> = {};
    if (auth) headers['authorization'] = basic(auth);
    const res = await request(this.sim.apiUrl + '/system/restore', { method: 'POST', headers, body: form, dispatcher: this.agent });
    const buf = Buffer.from(await res.body.arrayBuffer());
    const text = buf.toString('utf8');
    return { status: res.statusCode, headers: res.headers, body: buf, text, json: () => JSON.parse(text) as unknown };
  }

  /** `POST /system/backup` as `auth`; the whole file (tests only). Throws unless 200. */
  async backup(auth: Cred): Promise<Buffer> {
    const r = await this.req('POST', '/system/backup', { auth });
    if (r.status !== 200) throw new Error(`backup failed: ${r.status} ${r.text}`);
    return r.body;
  }

  close(): Promise<void> {
    return this.agent.close();
  }
}

export function basic(c: Cred): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
}
