/**
 * Small statistics for benchmarks (`bench/scale.mjs`): percentiles, medians and a least-squares straight line with
 * projections. Pure functions; the benchmark imports them from `dist/`.
 */

/**
 * The nearest-rank percentile `p` (0 < p ≤ 100) of `values` (any order; not modified): the smallest value with at
 * least p % of the values at or below it. NaN for an empty list.
 */
export function percentile(values: ArrayLike<number>, p: number): number {
  if (!(p > 0 && p <= 100)) throw new RangeError(`percentile: p must be in (0, 100], got ${p}`);
  if (values.length === 0) return NaN;
  const sorted = Float64Array.from(values).sort();
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

/** The median (the mean of the two middle values for an even count); NaN for an empty list. */
export function median(values: ArrayLike<number>): number {
  if (values.length === 0) return NaN;
  const s = Float64Array.from(values).sort();
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** y = a + b·x fitted to points; `r2` is the coefficient of determination (1 for an exact fit, NaN when y is constant). */
export interface LinearFit {
  a: number;
  b: number;
  r2: number;
  /** How many points the fit used. */
  n: number;
}

/**
 * Ordinary least squares of y on x. Needs at least two distinct x values (throws otherwise: a line through one point
 * is not a model). Points whose x or y is not finite are left out.
 */
export function fitLinear(points: ReadonlyArray<readonly [number, number]>): LinearFit {
  const pts = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const n = pts.length;
  const mx = pts.reduce((s, [x]) => s + x, 0) / n;
  const my = pts.reduce((s, [, y]) => s + y, 0) / n;
  let sxx = 0;
  let sxy = 0;
  let syy = 0;
  for (const [x, y] of pts) {
    sxx += (x - mx) ** 2;
    sxy += (x - mx) * (y - my);
    syy += (y - my) ** 2;
  }
  if (n < 2 || sxx === 0) throw new RangeError('fitLinear: needs points at two or more distinct x values');
  const b = sxy / sxx;
  const a = my - b * mx;
  const sse = pts.reduce((s, [x, y]) => s + (y - (a + b * x)) ** 2, 0);
  return { a, b, r2: syy === 0 ? NaN : 1 - sse / syy, n };
}

/** The fitted line's value at `x`. */
export function project(fit: LinearFit, x: number): number {
  return fit.a + fit.b * x;
}
