import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { createProgress, formatBytes, formatProgress } from './progress.js';

const p = { entriesRead: 10, bytesRead: 5 * 1024 * 1024, entriesWritten: 4, bytesWritten: 2048 };

describe('progress lines', () => {
  it('shows entries, bytes and a percentage', () => {
    expect(formatProgress('merge', p, 10 * 1024 * 1024)).toBe('merge: 10 entries, 5.0 MiB of 10.0 MiB read (50%), 4 entries, 2.0 KiB written');
    expect(formatBytes(3 * 1024 ** 3)).toBe('3.00 GiB');
  });

  it('is silent when stderr is not a terminal', () => {
    const s = new PassThrough();
    const r = createProgress('x', { stream: s });
    r.update(p);
    r.done();
    expect(s.read()).toBeNull();
  });

  it('draws at most once per interval and clears its line at the end', () => {
    const s = new PassThrough();
    let t = 1000;
    const r = createProgress('x', { stream: s, force: true, intervalMs: 200, now: () => t });
    r.update(p);
    t += 50;
    r.update(p);
    t += 200;
    r.update(p);
    r.done();
    const out = String(s.read());
    expect(out.match(/x: 10 entries/g)).toHaveLength(2);
    expect(out.endsWith('\r\x1b[K')).toBe(true);
  });
});
