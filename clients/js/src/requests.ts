// Requests waiting for their reply, matched on `request_id`.
//
// A request can cover several frames: messages the server does not acknowledge on success
// (`direct_message`, `broadcast`) are followed by a `ping`. The server handles one connection's
// messages in order, so the `pong` proves the first message was processed; an `error` for the
// first one, if any, is queued before it. One waiter therefore listens on several ids: an error
// on any of them rejects it, the reply on `resolveOn` resolves it.

import { ErrorCode, WshubError } from './errors.js';
import type { Envelope } from './protocol.js';

export interface Waiter {
  readonly ids: number[];
  readonly resolveOn: number;
  readonly type: string;
  /** The connection the frames went out on; undefined while queued. */
  sentOn: object | undefined;
  settled: boolean;
  /** Runs synchronously when the reply is matched, before the next frame is processed. */
  onReply: ((env: Envelope) => void) | undefined;
  resolve(env: Envelope): void;
  reject(err: WshubError): void;
  timer: ReturnType<typeof setTimeout> | undefined;
}

export class PendingRequests {
  private nextId = 1;
  private readonly byId = new Map<number, Waiter>();

  /** A fresh request id (unique for the client's life, so a late reply can't match a newer request). */
  id(): number {
    const id = this.nextId;
    this.nextId = this.nextId >= Number.MAX_SAFE_INTEGER ? 1 : this.nextId + 1;
    return id;
  }

  /**
   * Registers a waiter for `ids`, resolved by the reply to `resolveOn` and failed after
   * `timeoutMs` with a RequestTimeout error.
   */
  wait(
    ids: number[],
    resolveOn: number,
    type: string,
    timeoutMs: number,
    onReply?: (env: Envelope) => void,
  ): { waiter: Waiter; promise: Promise<Envelope> } {
    let waiter!: Waiter;
    const promise = new Promise<Envelope>((resolve, reject) => {
      waiter = {
        ids,
        resolveOn,
        type,
        sentOn: undefined,
        settled: false,
        onReply,
        resolve,
        reject,
        timer: undefined,
      };
    });
    for (const id of ids) this.byId.set(id, waiter);
    if (Number.isFinite(timeoutMs)) {
      waiter.timer = setTimeout(() => {
        this.fail(
          waiter,
          new WshubError(ErrorCode.RequestTimeout, `no reply to ${type} within ${timeoutMs} ms`, {
            requestId: resolveOn,
            details: { message_type: type, timeout_ms: timeoutMs, sent: waiter.sentOn !== undefined },
          }),
        );
      }, timeoutMs);
    }
    return { waiter, promise };
  }

  /** Settles the waiter of a reply or error frame; false when nothing waits for its id. */
  settle(env: Envelope): boolean {
    const id = env.request_id;
    if (id === undefined) return false;
    const waiter = this.byId.get(id);
    if (!waiter) return false;
    if (env.message_type === 'error') {
      this.fail(waiter, WshubError.fromFrame(env.data));
    } else if (id === waiter.resolveOn) {
      this.finish(waiter);
      try {
        waiter.onReply?.(env);
      } finally {
        waiter.resolve(env);
      }
    } else {
      // A reply to an earlier frame of a multi-frame request: keep waiting for `resolveOn`.
      this.byId.delete(id);
    }
    return true;
  }

  /** Rejects every waiter whose frames went out on `connection`. */
  failSent(connection: object, err: (w: Waiter) => WshubError): void {
    for (const waiter of this.unique()) {
      if (waiter.sentOn === connection) this.fail(waiter, err(waiter));
    }
  }

  /** Rejects every waiter. */
  failAll(err: (w: Waiter) => WshubError): void {
    for (const waiter of this.unique()) this.fail(waiter, err(waiter));
  }

  get size(): number {
    return this.unique().length;
  }

  fail(waiter: Waiter, err: WshubError): void {
    if (waiter.settled) return;
    this.finish(waiter);
    waiter.reject(err);
  }

  private finish(waiter: Waiter): void {
    waiter.settled = true;
    if (waiter.timer !== undefined) clearTimeout(waiter.timer);
    for (const id of waiter.ids) if (this.byId.get(id) === waiter) this.byId.delete(id);
  }

  private unique(): Waiter[] {
    return [...new Set(this.byId.values())];
  }
}
