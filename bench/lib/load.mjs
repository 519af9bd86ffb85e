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

/** The p-th percentile (nearest rank) of an ascending array. */
export function nearestRank(sorted, p) {
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}
