// Reconnect delays: exponential, capped, with jitter.
//
// Why jitter: when a node dies, every client it served loses its connection at the same
// instant. Without jitter they would all retry on the same schedule and hit the surviving nodes
// in synchronized waves. "Equal jitter" (a random point in the upper part of each step) spreads
// them out while keeping a floor, so a retry never degenerates into an immediate hammering loop.

export interface BackoffOptions {
  /** Delay of the first retry, before jitter. */
  minDelayMs: number;
  /** Cap of the un-jittered delay. */
  maxDelayMs: number;
  /** Growth per failed attempt. Default 2. */
  factor?: number;
  /** Fraction of each delay that is randomized, 0..1. Default 0.5: delays fall in [d/2, d]. */
  jitter?: number;
  /** Source of randomness in [0, 1); injectable for tests. */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly min: number;
  private readonly max: number;
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(options: BackoffOptions) {
    this.min = Math.max(0, options.minDelayMs);
    this.max = Math.max(this.min, options.maxDelayMs);
    this.factor = Math.max(1, options.factor ?? 2);
    this.jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5));
    this.random = options.random ?? Math.random;
  }

  /** The delay before the next attempt; each call counts as one more failed attempt. */
  next(): number {
    // Capping the exponent as well keeps the arithmetic finite after thousands of attempts.
    const exponent = Math.min(this.attempt, 64);
    const base = Math.min(this.max, this.min * Math.pow(this.factor, exponent));
    this.attempt += 1;
    return Math.round(base * (1 - this.jitter * this.random()));
  }

  /** Failed attempts since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** Called once a connection succeeds: the next outage starts again from the minimum. */
  reset(): void {
    this.attempt = 0;
  }
}
