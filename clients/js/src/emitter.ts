// A small typed event emitter. Node's EventEmitter does not exist in browsers, and pulling a
// polyfill in would be a runtime dependency; this is all the client needs.

type Listener = (...args: any[]) => void;
/** An interface mapping event names to listener signatures. */
export type EventMap<E> = { [K in keyof E]: Listener };

interface Registration {
  fn: Listener;
  /** For `once`: the listener the caller registered, so `off(event, fn)` finds it. */
  original: Listener;
}

export class Emitter<E extends EventMap<E>> {
  private readonly listeners = new Map<keyof E, Registration[]>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof E>(event: K, fn: E[K]): () => void {
    const list = this.listeners.get(event) ?? [];
    list.push({ fn, original: fn });
    this.listeners.set(event, list);
    return () => this.off(event, fn);
  }

  /** Adds a listener that is removed after its first call. */
  once<K extends keyof E>(event: K, fn: E[K]): () => void {
    const wrapper: Listener = (...args) => {
      this.off(event, fn);
      fn(...args);
    };
    const list = this.listeners.get(event) ?? [];
    list.push({ fn: wrapper, original: fn });
    this.listeners.set(event, list);
    return () => this.off(event, fn);
  }

  /** Removes a listener (the first registration of it); without `fn`, every listener of the event. */
  off<K extends keyof E>(event: K, fn?: E[K]): void {
    if (fn === undefined) {
      this.listeners.delete(event);
      return;
    }
    const list = this.listeners.get(event);
    if (!list) return;
    const i = list.findIndex((r) => r.original === fn || r.fn === fn);
    if (i >= 0) list.splice(i, 1);
    if (list.length === 0) this.listeners.delete(event);
  }

  /** Number of listeners of an event. */
  listenerCount<K extends keyof E>(event: K): number {
    return this.listeners.get(event)?.length ?? 0;
  }

  protected emit<K extends keyof E>(event: K, ...args: Parameters<E[K]>): void {
    const list = this.listeners.get(event);
    if (!list) return;
    // A copy: listeners may remove themselves (or others) while we iterate.
    for (const { fn } of [...list]) {
      try {
        fn(...args);
      } catch (e) {
        // A throwing listener must not stop the client from processing the rest of the frame
        // (replies, later events). Rethrow outside our call stack so the error still surfaces
        // the way an uncaught error does in the host (console in browsers, crash in Node).
        setTimeout(() => {
          throw e;
        }, 0);
      }
    }
  }
}
