import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Backoff } from '../dist/index.js';

test('delays double from the minimum up to the cap', () => {
  // random() = 0 means no jitter taken off: the raw schedule.
  const b = new Backoff({ minDelayMs: 100, maxDelayMs: 1000, random: () => 0 });
  assert.deepEqual([1, 2, 3, 4, 5, 6].map(() => b.next()), [100, 200, 400, 800, 1000, 1000]);
  assert.equal(b.attempts, 6);
});

test('jitter keeps every delay within [d/2, d] and actually spreads them', () => {
  const b = new Backoff({ minDelayMs: 1000, maxDelayMs: 1000 });
  const delays = Array.from({ length: 200 }, () => b.next());
  for (const d of delays) assert.ok(d >= 500 && d <= 1000, `delay ${d} out of [500, 1000]`);
  assert.ok(new Set(delays).size > 50, 'delays should not all be the same');
});

test('reset starts the next outage from the minimum again', () => {
  const b = new Backoff({ minDelayMs: 50, maxDelayMs: 10_000, random: () => 0 });
  b.next();
  b.next();
  b.next();
  b.reset();
  assert.equal(b.attempts, 0);
  assert.equal(b.next(), 50);
});

test('thousands of attempts stay finite and capped', () => {
  const b = new Backoff({ minDelayMs: 1, maxDelayMs: 5000, random: () => 0 });
  let last = 0;
  for (let i = 0; i < 5000; i++) last = b.next();
  assert.equal(last, 5000);
});
