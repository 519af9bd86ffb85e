// Load shapes shared by the benches (bench/gateway.mjs, bench/remote.mjs).

/**
 * `c` workers calling `op` back to back until `seconds` have passed (a closed loop); every call started is counted
 * once it ends. Returns the latencies (ms, in completion order), their count and the elapsed seconds.
 */
export async function closedLoop(c, seconds, op) {
  const latencies = [];
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (performance.now() < until) {
        const s = performance.now();
        await op();
        latencies.push(performance.now() - s);
      }
    }),
  );
  return { latencies, count: latencies.length, seconds: (performance.now() - t0) / 1000 };
}

/**
 * Like closedLoop, but paced: calls start at `rate` per second in total (the k-th at t0 + k / rate), on at most `c` at
 * once. Every path then gets the same arrivals, so CPU per call compares across paths whatever each one's capacity
 * (a closed loop lets a slower path batch more calls per wake-up, which makes each cheaper). Latency counts from the
 * call's scheduled start.
 */
export async function pacedLoop(c, seconds, rate, op) {
  const latencies = [];
  const t0 = performance.now();
  const total = Math.floor(seconds * rate);
  let next = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      for (let k = next++; k < total; k = next++) {
        const at = t0 + (k * 1000) / rate;
        const wait = at - performance.now();
        if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
        await op();
        latencies.push(performance.now() - at);
      }
    }),
  );
  return { latencies, count: latencies.length, seconds: (performance.now() - t0) / 1000 };
}

/** The p-th percentile (nearest rank) of an ascending array. */
export function nearestRank(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
