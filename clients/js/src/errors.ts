// Error codes and the error type every failing call rejects with.
//
// The server's codes are GoHub's numbering (1xxx protocol, 2xxx auth, 3xxx rooms, 4xxx clients).
// Failures that happen on the client side (no reply in time, connection lost, ...) get codes in
// the 9xxx range, which a server never sends, so one `code` field answers "what went wrong" for
// both without the application having to tell two error classes apart.

import type { ErrorData } from './protocol.js';

export const ErrorCode = {
  // Sent by the server.
  /** Unknown message type (the server also uses it when history is disabled). */
  Unknown: 1000,
  InvalidFormat: 1001,
  InvalidMessageId: 1002,
  ServerError: 1003,
  /** A cluster publish timed out on the server side (broker slow or away). */
  Timeout: 1004,
  RateLimited: 1005,
  Unauthorized: 2000,
  /** Missing permission; `details.permission` names it. */
  Forbidden: 2001,
  TokenExpired: 2002,
  InvalidToken: 2003,
  RoomNotFound: 3000,
  RoomAlreadyExists: 3001,
  RoomFull: 3002,
  NotInRoom: 3003,
  AlreadyInRoom: 3004,
  ClientNotFound: 4000,
  ClientOffline: 4001,
  MessageTooLarge: 4002,

  // Raised by this client, never sent by a server.
  /** No reply within the request timeout. The server may still have applied the request. */
  RequestTimeout: 9001,
  /** The connection dropped before the reply came; the request may or may not have been applied. */
  ConnectionLost: 9002,
  /** `close()` was called, or the client is not running (call `connect()` first). */
  ClientClosed: 9003,
  /** A connection attempt failed (socket error, no handshake in time, gave up reconnecting). */
  ConnectFailed: 9004,
  /** The server sent something this client cannot read. */
  ProtocolError: 9005,
} as const;

export type ErrorCodeName = keyof typeof ErrorCode;

/** WebSocket close codes the server uses. */
export const CloseCode = {
  Normal: 1000,
  GoingAway: 1001,
  ProtocolError: 1002,
  Abnormal: 1006,
  InvalidPayload: 1007,
  /** Slow consumer: the server's outbound queue for this client filled up. */
  Policy: 1008,
  TooBig: 1009,
  Internal: 1011,
  /** Authentication failed, or the token expired and was not refreshed in time. */
  Unauthorized: 4401,
  /** The server heard nothing (not even a pong) within its read timeout. */
  IdleTimeout: 4408,
  /** Another connection with the same client id replaced this one. */
  Replaced: 4409,
} as const;

export interface WshubErrorOptions {
  details?: unknown;
  requestId?: number;
  cause?: unknown;
}

export class WshubError extends Error {
  /** A server error code (< 9000) or one of the client-side codes (9xxx). */
  readonly code: number;
  /** Whatever the server attached (e.g. `{permission}` for 2001), or client-side context. */
  readonly details?: unknown;
  /** The request this error answers, when there was one. */
  readonly requestId?: number;
  readonly cause?: unknown;

  constructor(code: number, message: string, options: WshubErrorOptions = {}) {
    super(message);
    this.name = 'WshubError';
    this.code = code;
    if (options.details !== undefined) this.details = options.details;
    if (options.requestId !== undefined) this.requestId = options.requestId;
    if (options.cause !== undefined) this.cause = options.cause;
  }

  /** True when the server answered with this error (as opposed to a client-side failure). */
  get fromServer(): boolean {
    return this.code < 9000;
  }

  /** Builds the error of an `error` frame's `data`, tolerating a malformed one. */
  static fromFrame(data: unknown): WshubError {
    const d = (typeof data === 'object' && data !== null ? data : {}) as Partial<ErrorData>;
    const code = typeof d.code === 'number' ? d.code : ErrorCode.ProtocolError;
    const message = typeof d.message === 'string' ? d.message : 'error frame without a message';
    const options: WshubErrorOptions = {};
    if (d.details !== undefined) options.details = d.details;
    if (typeof d.request_id === 'number' && d.request_id !== 0) options.requestId = d.request_id;
    return new WshubError(code, message, options);
  }
}

/** Wraps anything thrown into a WshubError with `code`, keeping the original as `cause`. */
export function toWshubError(e: unknown, code: number, message: string): WshubError {
  if (e instanceof WshubError) return e;
  const why = e instanceof Error ? e.message : String(e);
  return new WshubError(code, `${message}: ${why}`, { cause: e });
}
