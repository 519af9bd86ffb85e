import { describe, expect, it } from 'vitest';
import { formatG, SimMetrics } from './metrics.js';

describe('simulator metrics in the firmware forms', () => {
  it('prints floats as C %g (Fmt.float)', () => {
    expect(formatG(0)).toBe('0');
    expect(formatG(0.0012345678)).toBe('0.00123457');
    expect(formatG(1.5e-7)).toBe('1.5e-07');
    expect(formatG(0.0001)).toBe('0.0001');
    expect(formatG(123456)).toBe('123456');
    expect(formatG(1234567)).toBe('1.23457e+06');
    expect(formatG(2.5)).toBe('2.5');
    expect(formatG(100)).toBe('100');
    expect(formatG(Number.POSITIVE_INFINITY)).toBe('inf');
    expect(formatG(Number.NaN)).toBe('nan');
  });

  it('shows keys lazily: responses after the first answer, the four key operations together, kv write once non-zero', () => {
    const m = new SimMetrics();
    const first = m.toJSON(0);
    expect(Object.keys(first).sort()).toEqual(['gc compactions', 'gc major bytes', 'gc major collections', 'gc minor collections', 'log errors', 'log warnings', 'uptime']);
    m.response(200, 0.01);
    m.response(200, 0);
    m.keyOperation('sign');
    m.logged('warning');
    const next = m.toJSON(3);
    expect(next).toMatchObject({ 'http response 200': '2', 'http response total': '2', 'http response time': '0.003', 'kv write': '3', generate: '0', sign: '1', decrypt: '0', encrypt: '0', 'log warnings': '1' });
    expect(Object.values(next).every((v) => typeof v === 'string')).toBe(true);
  });
});
