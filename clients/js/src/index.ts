// Public entry point of wshub-client.

export { WshubClient, defaultShouldReconnect } from './client.js';
export type {
  ClientStats,
  ConnectionState,
  GapEvent,
  RecoveryEvent,
  ReconnectOptions,
  RequestOptions,
  StateChange,
  TokenTransport,
  WshubClientOptions,
  WshubEvents,
} from './client.js';
export { WshubError, ErrorCode, CloseCode } from './errors.js';
export type { ErrorCodeName, WshubErrorOptions } from './errors.js';
export { Backoff } from './backoff.js';
export type { BackoffOptions } from './backoff.js';
export { RoomTracker } from './rooms.js';
export type { JoinOutcome, PublicationVerdict } from './rooms.js';
export { MessageType } from './protocol.js';
export type * from './protocol.js';
export type { CloseInfo, WebSocketConstructor, WebSocketLike } from './transport.js';
