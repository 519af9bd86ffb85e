/**
 * The CLI's side of the admin API: one request per call over the daemon's unix socket.
 * Throws AdminUnavailableError when nobody listens, AdminRemoteError with the daemon's code when it refuses.
 */
import { request } from 'node:http';
import { AdminRemoteError, AdminUnavailableError } from '../errors.js';
import type { AdminErrorBody, NamespaceAction } from './protocol.js';

export interface AdminClientOptions {
  socketPath: string;
  /** Milliseconds to wait for an answer; syncs and promotes can take minutes on large devices. */
  timeoutMs?: number;
}

export class AdminClient {
  constructor(private readonly options: AdminClientOptions) {}

  status<T = unknown>(): Promise<T> {
    return this.call<T>('GET', '/v1/status');
  }

  quarantineList<T = unknown>(): Promise<T> {
    return this.call<T>('GET', '/v1/quarantine');
  }

  quarantineAck<T = unknown>(body: { actor: string; file: string }): Promise<T> {
    return this.call<T>('POST', '/v1/quarantine/ack', body);
  }

  namespaceAction<T = unknown>(namespace: string, action: NamespaceAction, body: Record<string, unknown>): Promise<T> {
    return this.call<T>('POST', `/v1/namespaces/${encodeURIComponent(namespace)}/${action}`, body);
  }

  private call<T>(method: string, path: string, body?: unknown): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = request(
        {
          socketPath: this.options.socketPath,
          path,
          method,
          headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
          timeout: this.options.timeoutMs ?? 30 * 60_000,
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            let parsed: unknown;
            try {
              parsed = JSON.parse(Buffer.concat(chunks).toString('utf8'));
            } catch {
              reject(new AdminRemoteError(res.statusCode ?? 500, { message: 'daemon sent an unreadable answer' }));
              return;
            }
            if ((res.statusCode ?? 500) >= 400) {
              const e = (parsed as Partial<AdminErrorBody>).error ?? {};
              reject(new AdminRemoteError(res.statusCode ?? 500, e));
            } else resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.on('error', (cause: NodeJS.ErrnoException) => {
        if (cause.code === 'ENOENT' || cause.code === 'ECONNREFUSED') {
          reject(new AdminUnavailableError(`no daemon answers on ${this.options.socketPath}`, { cause }));
        } else if (cause.message === 'timeout') {
          reject(new AdminUnavailableError(`the daemon did not answer within ${this.options.timeoutMs ?? 1_800_000} ms`, { cause }));
        } else reject(new AdminUnavailableError(`admin socket error: ${cause.message}`, { cause }));
      });
      req.end(payload);
    });
  }
}
