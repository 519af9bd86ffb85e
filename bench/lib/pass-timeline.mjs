// What a bench reads from a pass's timeline: samples of both simulators' answered-request counters (the firmware's
// `http response total`), taken every few seconds while an anti-entropy pass runs (bench/scale.mjs).

/**
 * Requests per second of each site between consecutive samples `[t s, count A, count B]`, less each site's idle rate
 * (`idle.a`, `idle.b`: the daemons' own polling) and the one /metrics read per sample that the next count includes.
 * Returns `{ t, a, b, dt }` per interval (t: its end).
 */
export function rates(timeline, idle) {
  const out = [];
  for (let i = 1; i < timeline.length; i++) {
    const [t0, a0, b0] = timeline[i - 1];
    const [t1, a1, b1] = timeline[i];
    const dt = t1 - t0;
    if (!(dt > 0)) continue;
    out.push({ t: t1, a: (a1 - a0 - 1) / dt - idle.a, b: (b1 - b0 - 1) / dt - idle.b, dt });
  }
  return out;
}

/**
 * Whether both sites read at once: the seconds (up to the pass's end, `passS`) of intervals in which both served more
 * than `min` requests a second, each site's busy seconds, and the share of the pass both were busy.
 */
export function overlap(rs, passS, min = 10) {
  let both = 0;
  const busy = { a: 0, b: 0 };
  for (const r of rs) {
    if (r.t > passS + 1) break;
    if (r.a > min) busy.a += r.dt;
    if (r.b > min) busy.b += r.dt;
    if (r.a > min && r.b > min) both += r.dt;
  }
  return { bothS: both, busyAS: busy.a, busyBS: busy.b, share: passS > 0 ? both / passS : 0 };
}
