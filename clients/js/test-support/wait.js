// Waiting on client events without fixed sleeps: every wait resolves as soon as the condition
// holds and fails with a message saying what it waited for.

/** Resolves with the arguments of the next `event` matching `filter`. */
export function nextEvent(client, event, filter = () => true, timeoutMs = 5000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeoutMs} ms waiting for '${event}'`));
    }, timeoutMs);
    const off = client.on(event, (...args) => {
      if (!filter(...args)) return;
      clearTimeout(timer);
      off();
      resolve(args);
    });
  });
}

/** Resolves once the client reaches `state`. */
export function waitForState(client, state, timeoutMs = 5000) {
  if (client.state === state) return Promise.resolve();
  return nextEvent(client, 'state', (c) => c.state === state, timeoutMs);
}

/** Polls `predicate` (sync or async) until truthy. */
export async function until(predicate, timeoutMs = 5000, what = 'condition') {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Collects every `event` of a client into an array (returned), until `stop()`. */
export function collect(client, event, map = (x) => x) {
  const items = [];
  const stop = client.on(event, (...args) => items.push(map(...args)));
  // Non-enumerable, so the array still deep-equals a plain one.
  Object.defineProperty(items, 'stop', { value: stop });
  return items;
}
