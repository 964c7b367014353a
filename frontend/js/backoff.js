// Reconnect delays: exponential from 0.5 s, capped at 10 s, with jitter so a restarted server is not hit by every
// client at the same instant.

export function reconnectDelay(attempt, random = Math.random) {
  const base = Math.min(10_000, 500 * 2 ** attempt);
  return Math.round(base * (0.75 + 0.5 * random()));
}
