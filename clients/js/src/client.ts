// The client: one logical session over a sequence of WebSocket connections.
//
// A loop owns the connection life cycle: open a socket (next URL in the list), authenticate,
// wait for `connected`, rejoin the rooms the application joined (asking for what was missed),
// serve until the socket closes, wait a jittered backoff, repeat. Everything the application
// calls goes through `call()`, which sends at once when a connection is up and otherwise queues
// until the next one (bounded by the request timeout).
//
// Room publications pass the RoomTracker's filter (duplicates and our own dropped). When one
// arrives more than one offset past the last one delivered, the ones in between never reached
// this connection live (see rooms.ts): the room's pushed frames are held while they are fetched
// with `history` on the same connection, then the fetched ones and the held ones are delivered in
// order. If the history can't be read, the connection is dropped and the rejoin's recovery
// replays the gap instead.

import { Backoff } from './backoff.js';
import { Emitter } from './emitter.js';
import { CloseCode, ErrorCode, WshubError, toWshubError } from './errors.js';
import {
  MessageType,
  encodeEnvelope,
  isPublication,
  parseEnvelope,
  type Authenticated,
  type BroadcastMessage,
  type Connected,
  type DirectMessage,
  type Envelope,
  type History,
  type HistoryPublication,
  type Kicked,
  type KickedNotice,
  type Pong,
  type PresenceJoin,
  type PresenceLeave,
  type Published,
  type RoomCreated,
  type RoomDeleted,
  type RoomJoined,
  type RoomLeft,
  type RoomList,
  type RoomMembers,
  type RoomMessage,
  type StreamPosition,
} from './protocol.js';
import { PendingRequests, type Waiter } from './requests.js';
import { RoomTracker, type PublicationVerdict } from './rooms.js';
import {
  checkUrl,
  closeQuietly,
  detach,
  frameText,
  resolveWebSocket,
  withQuery,
  type CloseInfo,
  type WebSocketConstructor,
  type WebSocketLike,
} from './transport.js';

/** How the token reaches the server. */
export type TokenTransport =
  /** `?token=` on the URL. Works with every server setting; visible in proxy logs. */
  | 'query'
  /** An `authenticate {token}` first message. Keeps the token out of URLs and logs. */
  | 'authenticate'
  /** `Sec-WebSocket-Protocol: wshub.bearer, <token>`: the header a browser can set. */
  | 'protocol';

export interface ReconnectOptions {
  /** Delay before the first retry (jittered). Default 250 ms. */
  minDelayMs?: number;
  /** Cap of the exponential delay. Default 10 000 ms. */
  maxDelayMs?: number;
  /** Stop (state `closed`) after this long without a connection. Default: never. */
  giveUpAfterMs?: number;
  /** Randomized fraction of each delay, 0..1. Default 0.5. */
  jitter?: number;
}

export interface WshubClientOptions {
  /** The WebSocket endpoint (`ws://host:8080/ws`), or several: reconnects rotate through them. */
  url: string | readonly string[];
  /** WebSocket implementation; defaults to `globalThis.WebSocket`. Pass `ws`'s on Node 20. */
  WebSocket?: WebSocketConstructor;
  /** A fixed token. */
  token?: string;
  /**
   * Called for a token before every connection attempt and when the server reports the token
   * expired (error 2002), to refresh it in-band before the server's grace period ends.
   */
  getToken?: () => string | Promise<string>;
  /** Default `query`. */
  tokenTransport?: TokenTransport;
  /**
   * `?client_id=` for servers without auth (or anonymous clients). Without a token, the id the
   * server assigned first is reused on reconnects, so presence sees the same client come back.
   */
  clientId?: string;
  /** How long a request waits for its reply (including time queued while disconnected). Default 10 000 ms. */
  requestTimeoutMs?: number;
  /** How long a connection attempt may take, from opening the socket to `connected`. Default 10 000 ms. */
  connectTimeoutMs?: number;
  /**
   * Interval of application-level pings; a ping without a pong within `requestTimeoutMs` (or the
   * interval, if shorter) drops the connection and reconnects. Detects dead connections that TCP
   * does not report (a laptop waking up, a NAT that forgot us). 0 disables. Default 25 000 ms.
   */
  heartbeatIntervalMs?: number;
  /** Reconnect settings, or `false` to never reconnect. */
  reconnect?: boolean | ReconnectOptions;
  /** Overrides which closes are followed by a reconnect (see `defaultShouldReconnect`). */
  shouldReconnect?: (close: CloseInfo) => boolean;
}

export type ConnectionState = 'idle' | 'connecting' | 'connected' | 'disconnected' | 'reconnecting' | 'closed';

export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** `connecting`: the URL being tried. */
  url?: string;
  /** `connecting`/`reconnecting`: failed attempts since the last connection. */
  attempt?: number;
  /** `reconnecting`: how long until the next attempt. */
  delayMs?: number;
  /** `disconnected`/`closed`: the close code and reason, when a socket closed. */
  code?: number;
  reason?: string;
  /** `reconnecting` after a failed attempt, or `closed` for a fatal failure. */
  error?: WshubError;
}

/** Emitted for each room rejoined after a reconnect. */
export interface RecoveryEvent {
  roomId: string;
  /**
   * True when every publication missed while disconnected is being delivered. False means there
   * may be a gap: the server could not replay (history lost, too short, or disabled), or the
   * rejoin failed (`error`, and the room is no longer tracked). Reload the room's state then,
   * e.g. with `history()`.
   */
  recovered: boolean;
  /** The room's epoch and latest offset at the rejoin (when the server keeps history). */
  epoch?: string;
  offset?: number;
  error?: WshubError;
}

/**
 * Emitted when a room publication arrived more than one offset past the last one delivered: the
 * publications in between were stored but never reached this connection live (published on
 * another node while ours was cut off from the broker, or stored by a node that then failed to
 * publish them). They are fetched with `history` and delivered, in order, right after this
 * event and before the publication that revealed the gap.
 */
export interface GapEvent {
  roomId: string;
  epoch: string;
  /** The last offset delivered before the gap. */
  after: number;
  /** The offset of the publication that revealed the gap. */
  before: number;
  /** Publications fetched from the history and delivered now (own publications excluded). */
  filled: number;
  /**
   * Offsets of the gap the history no longer held (already out of its window): skipped, lost
   * to this client. Reload the room's state if you need them.
   */
  missing: number;
  /**
   * The history could not be read (e.g. 2001 without the `read:message` permission, a timeout).
   * The client then drops the connection and reconnects: the rejoin's recovery replays the gap
   * (see the `recovery` event that follows). Without reconnects (`reconnect: false`) the gap
   * stays: `missing` counts it and the publication after it is delivered.
   */
  error?: WshubError;
}

/** Counters of what the client did to keep the application's view of its rooms whole. */
export interface ClientStats {
  /** Room publications dropped because they were delivered already (a replay overlapping live traffic). */
  duplicatesDropped: number;
  /** Connections made after an earlier one of this client ended (or failed to rejoin its rooms). */
  reconnects: number;
  /** Gaps seen in live room traffic (`gap` events). */
  gaps: number;
  /** Publications fetched from the history to fill gaps, and delivered. */
  gapFilled: number;
  /** Publications of gaps that the history no longer held, skipped. */
  gapMissing: number;
}

export interface WshubEvents {
  room_message: (message: RoomMessage, envelope: Envelope<RoomMessage>) => void;
  direct_message: (message: DirectMessage, envelope: Envelope<DirectMessage>) => void;
  broadcast: (message: BroadcastMessage, envelope: Envelope<BroadcastMessage>) => void;
  presence_join: (event: PresenceJoin, envelope: Envelope<PresenceJoin>) => void;
  presence_leave: (event: PresenceLeave, envelope: Envelope<PresenceLeave>) => void;
  room_deleted: (event: RoomDeleted, envelope: Envelope<RoomDeleted>) => void;
  kicked: (event: KickedNotice, envelope: Envelope<KickedNotice>) => void;
  /** Every frame the server pushed (not replies), after duplicate filtering; custom types too. */
  message: (envelope: Envelope) => void;
  recovery: (event: RecoveryEvent) => void;
  /** A gap in a room's live traffic, about to be filled from the history (see `GapEvent`). */
  gap: (event: GapEvent) => void;
  state: (change: StateChange) => void;
  /** A token was accepted: at connect (in-band transport) or by a refresh. */
  authenticated: (data: Authenticated) => void;
  /**
   * Errors not tied to a call: the server's unsolicited error frames (e.g. 2002 without
   * `getToken`), failed token refreshes, failed connection attempts that end the client.
   */
  error: (error: WshubError) => void;
}

export interface RequestOptions {
  /** Overrides `requestTimeoutMs` for this call. */
  timeoutMs?: number;
}

/**
 * The default reconnect policy. Not after 1000 (the server ended the session on purpose, e.g. an
 * admin disconnect) or 4409 (a newer connection with our client id took over: reconnecting would
 * kick it in turn), nor after 4401 unless `getToken` can supply a fresh token. After anything
 * else (restart 1001, network loss 1006, slow consumer 1008, idle timeout 4408, ...) yes.
 */
export function defaultShouldReconnect(close: CloseInfo, canRefreshToken: boolean): boolean {
  if (close.code === CloseCode.Normal || close.code === CloseCode.Replaced) return false;
  if (close.code === CloseCode.Unauthorized) return canRefreshToken;
  return true;
}

const PUSH_EVENTS: ReadonlySet<string> = new Set([
  MessageType.RoomMessage,
  MessageType.DirectMessage,
  MessageType.Broadcast,
  MessageType.PresenceJoin,
  MessageType.PresenceLeave,
  MessageType.RoomDeleted,
  MessageType.Kicked,
]);

/** One WebSocket connection that completed the handshake. */
interface Connection {
  readonly ws: WebSocketLike;
  readonly url: string;
  /** Changes when an anonymous connection authenticates as a user. */
  clientId: string;
  readonly nodeId: string;
  /** Resolves when the socket closed (or was abandoned). */
  readonly closed: Promise<CloseInfo>;
  markClosed(info: CloseInfo): void;
  heartbeat: ReturnType<typeof setTimeout> | undefined;
  /** Frames whose text is being read asynchronously (Blobs): later frames wait behind them. */
  decoding: Promise<void> | undefined;
  /** A rejoin failed on this connection in a way another attempt may not (timeout, 1003, 1004). */
  rejoinFailure: WshubError | undefined;
}

/** A gap being filled: the room's pushed frames held meanwhile, the first one revealed the gap. */
interface GapFill {
  readonly conn: Connection;
  readonly held: Envelope[];
}

/** One run of the connect loop, from `connect()` to `close()` (or a fatal failure). */
interface Run {
  stopped: boolean;
  /** Cuts a backoff wait short. */
  wake: (() => void) | undefined;
  /** Aborts a connection attempt in progress. */
  abort: (() => void) | undefined;
}

/** A failed connection attempt; `fatal` ones (auth refused) end the run instead of retrying. */
class AttemptFailed {
  constructor(
    readonly error: WshubError,
    readonly fatal: boolean,
  ) {}
}

interface Outgoing {
  frames: string[];
  waiter: Waiter;
}

interface ResolvedOptions {
  tokenTransport: TokenTransport;
  requestTimeoutMs: number;
  connectTimeoutMs: number;
  heartbeatIntervalMs: number;
  reconnect: boolean;
  giveUpAfterMs: number;
}

/** Rejoin failures worth another attempt: no reply in time, or the server's 1003/1004. */
const TRANSIENT_CODES: ReadonlySet<number> = new Set([
  ErrorCode.RequestTimeout,
  ErrorCode.ServerError,
  ErrorCode.Timeout,
]);

const AUTH_CODES: ReadonlySet<number> = new Set([
  ErrorCode.Unauthorized,
  ErrorCode.Forbidden,
  ErrorCode.TokenExpired,
  ErrorCode.InvalidToken,
]);

export class WshubClient extends Emitter<WshubEvents> {
  private readonly options: WshubClientOptions;
  private readonly settings: ResolvedOptions;
  private readonly WebSocketImpl: WebSocketConstructor;
  private readonly urls: string[];
  private urlIndex = 0;
  private readonly backoff: Backoff;
  private readonly requests = new PendingRequests();
  private readonly rooms = new RoomTracker();
  /** Gaps being filled on the current connection, by room. */
  private readonly fills = new Map<string, GapFill>();
  private readonly counters: ClientStats = { duplicatesDropped: 0, reconnects: 0, gaps: 0, gapFilled: 0, gapMissing: 0 };
  private everConnected = false;
  private queue: Outgoing[] = [];
  private current: ConnectionState = 'idle';
  private conn: Connection | undefined;
  private run: Run | undefined;
  private token: string | undefined;
  private assignedClientId: string | undefined;
  private currentNodeId: string | undefined;
  private refreshing: Promise<void> | undefined;
  private connectWaiters: Array<{ resolve: () => void; reject: (e: WshubError) => void }> = [];

  constructor(options: WshubClientOptions) {
    super();
    const urls = typeof options.url === 'string' ? [options.url] : [...(options.url ?? [])];
    if (urls.length === 0) throw new TypeError('wshub-client: `url` is required');
    urls.forEach(checkUrl);
    this.urls = urls;
    this.options = options;
    this.WebSocketImpl = resolveWebSocket(options.WebSocket);
    this.token = options.token;
    const reconnect = options.reconnect ?? true;
    const r: ReconnectOptions = typeof reconnect === 'object' ? reconnect : {};
    this.settings = {
      tokenTransport: options.tokenTransport ?? 'query',
      requestTimeoutMs: options.requestTimeoutMs ?? 10_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
      heartbeatIntervalMs: options.heartbeatIntervalMs ?? 25_000,
      reconnect: reconnect !== false,
      giveUpAfterMs: r.giveUpAfterMs ?? Number.POSITIVE_INFINITY,
    };
    this.backoff = new Backoff({
      minDelayMs: r.minDelayMs ?? 250,
      maxDelayMs: r.maxDelayMs ?? 10_000,
      ...(r.jitter !== undefined ? { jitter: r.jitter } : {}),
    });
  }

  // ---- state ----

  get state(): ConnectionState {
    return this.current;
  }

  /** The id the server knows this client by (set once connected). */
  get clientId(): string | undefined {
    return this.conn?.clientId ?? this.assignedClientId;
  }

  /** The node of the current (or last) connection. */
  get nodeId(): string | undefined {
    return this.currentNodeId;
  }

  /** The URL of the current connection. */
  get url(): string | undefined {
    return this.conn?.url;
  }

  /** Rooms joined through this client (rejoined automatically after reconnects). */
  get joinedRooms(): string[] {
    return this.rooms.joinedRooms();
  }

  /** A snapshot of the counters of duplicates dropped, reconnects and gaps filled. */
  get stats(): ClientStats {
    return { ...this.counters };
  }

  /** The last delivered position in a room, to persist and pass as `since` to a later `joinRoom`. */
  position(roomId: string): StreamPosition | undefined {
    return this.rooms.position(roomId);
  }

  // ---- life cycle ----

  /**
   * Connects (trying the URLs in turn with backoff, like a reconnect) and resolves once
   * connected. Rejects when authentication is refused, when `close()` is called first, or when
   * `reconnect.giveUpAfterMs` passes. After `close()`, calling it again resumes the joined rooms.
   */
  connect(): Promise<void> {
    if (this.current === 'connected') return Promise.resolve();
    const promise = new Promise<void>((resolve, reject) => this.connectWaiters.push({ resolve, reject }));
    if (!this.run) {
      const run: Run = { stopped: false, wake: undefined, abort: undefined };
      this.run = run;
      void this.loop(run);
    }
    return promise;
  }

  /**
   * Closes the connection and stops reconnecting. Pending and queued requests reject with
   * ClientClosed. Room positions are kept: a later `connect()` rejoins and recovers them.
   */
  async close(code: number = CloseCode.Normal, reason = 'client closed'): Promise<void> {
    const run = this.run;
    if (!run) return;
    run.stopped = true;
    run.wake?.();
    run.abort?.();
    const conn = this.conn;
    this.conn = undefined;
    this.fills.clear();
    let closed: Promise<unknown> = Promise.resolve();
    if (conn) {
      this.stopHeartbeat(conn);
      // Wait for the close handshake, but not forever: a dead peer never answers it.
      let timer: ReturnType<typeof setTimeout> | undefined;
      closed = Promise.race([conn.closed, new Promise((r) => (timer = setTimeout(r, 1000)))]).then(() =>
        clearTimeout(timer),
      );
      closeQuietly(conn.ws, code, reason);
    }
    this.finish(run, undefined, { code, reason });
    await closed;
  }

  // ---- requests ----

  /** Application-level ping; `rtt` is measured by the server from our timestamp. */
  async ping(options?: RequestOptions): Promise<Pong> {
    return (await this.call<Pong>(MessageType.Ping, { ts: Date.now() }, options)).data;
  }

  /**
   * Joins a room; publications are delivered as `room_message` events from the reply on, and
   * the room is rejoined (with recovery) after every reconnect. `since` asks for everything
   * published after a position saved earlier (see `position()`); check `recovered` in the reply.
   */
  async joinRoom(roomId: string, options?: RequestOptions & { since?: StreamPosition }): Promise<RoomJoined> {
    const since = options?.since;
    this.rooms.joining(roomId, since);
    try {
      const env = await this.call<RoomJoined>(
        MessageType.JoinRoom,
        since ? { room_id: roomId, since: { offset: since.offset, epoch: since.epoch } } : { room_id: roomId },
        options,
        (reply) => this.rooms.joined(roomId, reply.data as RoomJoined, since !== undefined),
      );
      return env.data;
    } catch (e) {
      this.rooms.joinFailed(roomId);
      throw e;
    }
  }

  async leaveRoom(roomId: string, options?: RequestOptions): Promise<RoomLeft> {
    try {
      return (
        await this.call<RoomLeft>(MessageType.LeaveRoom, { room_id: roomId }, options, () => this.rooms.forget(roomId))
      ).data;
    } catch (e) {
      // Not a member (any more): nothing to rejoin either.
      if (e instanceof WshubError && e.code === ErrorCode.NotInRoom) this.rooms.forget(roomId);
      throw e;
    }
  }

  /**
   * Publishes to a room (members only) and resolves with the server's ack, which carries the
   * publication's offset when the room keeps history. Other members receive it; the sender does
   * not. An `idempotencyKey` makes a retry (e.g. after ConnectionLost) harmless: the server
   * applies the first and answers the retry with the same offset.
   */
  async sendToRoom(
    roomId: string,
    content: unknown,
    options?: RequestOptions & { idempotencyKey?: string },
  ): Promise<Published> {
    const data: Record<string, unknown> = { room_id: roomId, content };
    if (options?.idempotencyKey !== undefined) data.idempotency_key = options.idempotencyKey;
    return (
      await this.call<Published>(MessageType.RoomMessage, data, options, (reply) =>
        this.rooms.published(reply.data as Published),
      )
    ).data;
  }

  /** Sends a `direct_message` to one client (on any node); rejects with 4000 when it is not connected. */
  async sendDirect(targetId: string, content: unknown, options?: RequestOptions): Promise<void> {
    await this.call(MessageType.DirectMessage, { target_id: targetId, content }, options, undefined, true);
  }

  /** Sends to every other connected client (needs `broadcast:message`). */
  async broadcast(content: unknown, options?: RequestOptions): Promise<void> {
    await this.call(MessageType.Broadcast, { content }, options, undefined, true);
  }

  /** Creates a room that stays until deleted (rooms created by joining vanish when empty). */
  async createRoom(
    roomId: string,
    options?: RequestOptions & { name?: string; maxClients?: number },
  ): Promise<RoomCreated> {
    const data: Record<string, unknown> = { room_id: roomId };
    if (options?.name !== undefined) data.name = options.name;
    if (options?.maxClients !== undefined) data.max_clients = options.maxClients;
    return (await this.call<RoomCreated>(MessageType.CreateRoom, data, options)).data;
  }

  /** Deletes a room; its members (this client included) get a `room_deleted` event. */
  async deleteRoom(roomId: string, options?: RequestOptions): Promise<RoomDeleted> {
    return (
      await this.call<RoomDeleted>(MessageType.DeleteRoom, { room_id: roomId }, options, () =>
        this.rooms.forget(roomId),
      )
    ).data;
  }

  async listRooms(options?: RequestOptions): Promise<RoomList> {
    return (await this.call<RoomList>(MessageType.ListRooms, {}, options)).data;
  }

  /** Members of a room, on every node (`room_members`). */
  async members(roomId: string, options?: RequestOptions): Promise<RoomMembers> {
    return (await this.call<RoomMembers>(MessageType.RoomMembers, { room_id: roomId }, options)).data;
  }

  /** Stored publications after offset `since` (default: the oldest kept), at most `limit` (≤ 1000). */
  async history(roomId: string, options?: RequestOptions & { since?: number; limit?: number }): Promise<History> {
    const data: Record<string, unknown> = { room_id: roomId };
    if (options?.since !== undefined) data.since = options.since;
    if (options?.limit !== undefined) data.limit = options.limit;
    return (await this.call<History>(MessageType.History, data, options)).data;
  }

  /** Removes another member from a room (needs `admin:room`); it gets a `kicked` event. */
  async kick(roomId: string, clientId: string, options?: RequestOptions): Promise<Kicked> {
    return (await this.call<Kicked>(MessageType.Kick, { room_id: roomId, client_id: clientId }, options)).data;
  }

  /**
   * Sends a token on the open connection: a refresh (same user, new permissions and expiry), or
   * an anonymous connection proving who it is — the server then re-registers it under the
   * token's id and this client rejoins its rooms as that user. The token is also used for later
   * reconnects when no `getToken` is configured.
   */
  async authenticate(token: string, options?: RequestOptions): Promise<Authenticated> {
    const env = await this.call<Authenticated>(MessageType.Authenticate, { token }, options, (reply) => {
      this.token = token;
      this.emit('authenticated', reply.data as Authenticated);
    });
    return env.data;
  }

  /**
   * Sends any message type (e.g. one a server-side custom handler implements) and resolves
   * with the reply envelope, or rejects with the server's error.
   */
  async request<T = unknown>(type: string, data: unknown, options?: RequestOptions): Promise<Envelope<T>> {
    return this.call<T>(type, data, options);
  }

  // ---- internals: requests ----

  private call<T>(
    type: string,
    data: unknown,
    options: RequestOptions | undefined,
    onReply?: (env: Envelope) => void,
    barrier = false,
  ): Promise<Envelope<T>> {
    if (!this.run) {
      return Promise.reject(
        new WshubError(ErrorCode.ClientClosed, `cannot send ${type}: the client is not running (call connect())`),
      );
    }
    const id = this.requests.id();
    const frames = [encodeEnvelope(type, data, id)];
    const ids = [id];
    if (barrier) {
      const pingId = this.requests.id();
      frames.push(encodeEnvelope(MessageType.Ping, { ts: Date.now() }, pingId));
      ids.push(pingId);
    }
    const timeout = options?.timeoutMs ?? this.settings.requestTimeoutMs;
    const { waiter, promise } = this.requests.wait(ids, ids[ids.length - 1]!, type, timeout, onReply);
    const out: Outgoing = { frames, waiter };
    if (this.conn) this.transmit(this.conn, out);
    else this.queue.push(out);
    return promise as Promise<Envelope<T>>;
  }

  private transmit(conn: Connection, out: Outgoing): void {
    // Marked before sending: if the socket is already closing, the close handler fails it as
    // ConnectionLost instead of leaving it to time out.
    out.waiter.sentOn = conn;
    try {
      for (const frame of out.frames) conn.ws.send(frame);
    } catch (e) {
      this.requests.fail(out.waiter, toWshubError(e, ErrorCode.ConnectionLost, `sending ${out.waiter.type} failed`));
    }
  }

  private flushQueue(conn: Connection): void {
    const queued = this.queue;
    this.queue = [];
    for (const out of queued) {
      if (!out.waiter.settled) this.transmit(conn, out);
    }
  }

  // ---- internals: the connection loop ----

  private async loop(run: Run): Promise<void> {
    let outageStart = Date.now();
    let failures = 0;
    while (!run.stopped) {
      const url = this.urls[this.urlIndex % this.urls.length]!;
      this.urlIndex += 1;
      this.setState('connecting', { url, attempt: failures });
      let conn: Connection;
      try {
        conn = await this.open(run, url);
      } catch (e) {
        if (run.stopped) return;
        const failure = e instanceof AttemptFailed ? e : new AttemptFailed(toWshubError(e, ErrorCode.ConnectFailed, 'connection attempt failed'), false);
        if (failure.fatal) {
          this.finish(run, failure.error);
          return;
        }
        failures += 1;
        if (!(await this.retryAfterFailure(run, failures, outageStart, failure.error))) return;
        continue;
      }
      if (this.everConnected) this.counters.reconnects += 1;
      this.everConnected = true;
      // The attempt has succeeded once every room is rejoined: until then a failure keeps the
      // backoff growing and `giveUpAfterMs` counting.
      let ready = false;
      const info = await this.serve(run, conn, () => {
        ready = true;
        failures = 0;
        this.backoff.reset();
      });
      if (run.stopped) return;
      const rejoinFailure = conn.rejoinFailure;
      if (rejoinFailure) {
        // A rejoin failed in a way another attempt may not (the node could not reach the cluster
        // state, say): it counts as a failed attempt, so the room is not left behind.
        if (ready) outageStart = Date.now();
        failures += 1;
        if (!(await this.retryAfterFailure(run, failures, outageStart, rejoinFailure))) return;
        continue;
      }
      let reconnect: boolean;
      try {
        reconnect =
          this.settings.reconnect &&
          (this.options.shouldReconnect
            ? this.options.shouldReconnect(info)
            : defaultShouldReconnect(info, this.options.getToken !== undefined));
      } catch (e) {
        // The loop runs detached; a throwing policy must end it visibly, not as an unhandled rejection.
        this.finish(run, toWshubError(e, ErrorCode.ClientClosed, 'shouldReconnect threw'), info);
        return;
      }
      if (!reconnect) {
        this.finish(run, undefined, info);
        return;
      }
      outageStart = Date.now();
      const delayMs = this.backoff.next();
      this.setState('reconnecting', { attempt: 0, delayMs, code: info.code, reason: info.reason });
      await this.sleep(run, delayMs);
    }
  }

  /** Runs one established connection until it closes; `onReady` once its rooms are rejoined. */
  private async serve(run: Run, conn: Connection, onReady: () => void): Promise<CloseInfo> {
    this.assignedClientId = conn.clientId;
    this.currentNodeId = conn.nodeId;
    // Rejoins go out before anything the application queued, so a queued publication to a
    // joined room reaches the server after the join.
    const rejoined = this.rejoinRooms(conn);
    this.flushQueue(conn);
    this.startHeartbeat(conn);
    await rejoined;
    if (!run.stopped && this.conn === conn) {
      onReady();
      this.setState('connected', { url: conn.url });
      const waiters = this.connectWaiters;
      this.connectWaiters = [];
      for (const w of waiters) w.resolve();
    }
    return conn.closed;
  }

  /** Rejoins every tracked room with `since` its position, reporting each as a `recovery` event. */
  private rejoinRooms(conn: Connection): Promise<unknown> {
    const joins = this.rooms.rejoinList().map(({ roomId, since }) => {
      this.rooms.joining(roomId, since);
      const data = since ? { room_id: roomId, since } : { room_id: roomId };
      const id = this.requests.id();
      const { waiter, promise } = this.requests.wait(
        [id],
        id,
        MessageType.JoinRoom,
        this.settings.requestTimeoutMs,
        (reply) => {
          const joined = reply.data as RoomJoined;
          const result = this.rooms.joined(roomId, joined, since !== undefined);
          const outcome: RecoveryEvent = { roomId, recovered: result === 'recovered' };
          if (joined.epoch !== undefined) outcome.epoch = joined.epoch;
          if (joined.offset !== undefined) outcome.offset = joined.offset;
          // Emitted here, before the replay behind the reply is processed, so the application
          // learns about a gap before it sees the messages that follow it.
          this.emit('recovery', outcome);
        },
      );
      this.transmit(conn, { frames: [encodeEnvelope(MessageType.JoinRoom, data, id)], waiter });
      return promise.catch((e: unknown) => {
        const err = toWshubError(e, ErrorCode.ServerError, `rejoining ${roomId} failed`);
        this.rooms.joinFailed(roomId);
        // A lost connection keeps the room for the next attempt.
        if (err.code === ErrorCode.ConnectionLost || err.code === ErrorCode.ClientClosed) return;
        if (TRANSIENT_CODES.has(err.code)) {
          // No reply in time, or the server could not do it now (1003, 1004: its broker or
          // cluster state unavailable): another attempt, maybe on another node, may succeed. The
          // connection is dropped and the loop counts it as a failed attempt; the room stays
          // tracked and is rejoined, with recovery, on the next connection.
          if (this.settings.reconnect && this.conn === conn) {
            conn.rejoinFailure ??= err;
            this.abandon(conn, { code: CloseCode.Abnormal, reason: `rejoining ${roomId} failed` });
          }
          if (this.settings.reconnect || err.code === ErrorCode.RequestTimeout) return;
        }
        // A refusal (permission revoked, room full, ...) would repeat on every reconnect, so the
        // room is dropped and reported.
        this.rooms.forget(roomId);
        this.emit('recovery', { roomId, recovered: false, error: err });
        this.emit('error', err);
      });
    });
    return Promise.all(joins);
  }

  /** Opens a socket to `url` and completes the handshake (authentication, `connected`). */
  private async open(run: Run, url: string): Promise<Connection> {
    let token: string | undefined;
    try {
      token = this.options.getToken ? await this.options.getToken() : this.token;
    } catch (e) {
      throw new AttemptFailed(toWshubError(e, ErrorCode.ConnectFailed, 'getToken failed'), false);
    }
    if (this.options.getToken) this.token = token;
    if (run.stopped) throw new AttemptFailed(closedError(), false);
    const transport = this.settings.tokenTransport;
    // Reusing the assigned id only makes sense for anonymous clients: with a token the server
    // takes the identity from the token, and an in-band token must start from a fresh id.
    const clientId = this.options.clientId ?? (token === undefined ? this.assignedClientId : undefined);
    const target = withQuery(url, {
      token: transport === 'query' ? token : undefined,
      client_id: clientId,
    });
    const protocols = transport === 'protocol' && token !== undefined ? ['wshub.bearer', token] : undefined;
    const inBand = transport === 'authenticate' && token !== undefined;

    return new Promise<Connection>((resolve, reject) => {
      let ws: WebSocketLike;
      try {
        ws = protocols ? new this.WebSocketImpl(target, protocols) : new this.WebSocketImpl(target);
      } catch (e) {
        reject(new AttemptFailed(toWshubError(e, ErrorCode.ConnectFailed, `cannot open ${url}`), false));
        return;
      }
      try {
        ws.binaryType = 'arraybuffer';
      } catch {
        // Implementations without binaryType hand over binary frames in their own type.
      }
      let done = false;
      let lastError: unknown;
      let authId: number | undefined;
      let authenticated: Authenticated | undefined;
      // `connected` frames seen before our in-band token was applied (anonymous sessions).
      const seen = new Map<string, string>();

      const fail = (failure: AttemptFailed): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        run.abort = undefined;
        detach(ws);
        closeQuietly(ws, CloseCode.Normal, 'handshake failed');
        reject(failure);
      };
      const succeed = (ready: Connected): void => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        run.abort = undefined;
        let markClosed!: (info: CloseInfo) => void;
        const closed = new Promise<CloseInfo>((r) => (markClosed = r));
        const conn: Connection = {
          ws,
          url,
          clientId: ready.client_id,
          nodeId: ready.node_id,
          closed,
          markClosed,
          heartbeat: undefined,
          decoding: undefined,
          rejoinFailure: undefined,
        };
        // Handlers are swapped synchronously: frames right behind `connected` (even in the same
        // network read) are already handled as the established connection's.
        ws.onmessage = (ev: { data: unknown }) => this.onData(conn, ev.data);
        ws.onclose = (ev: { code?: number; reason?: string }) =>
          this.onSocketClosed(conn, { code: ev.code ?? CloseCode.Abnormal, reason: ev.reason ?? '' });
        ws.onerror = () => {};
        this.conn = conn;
        if (authenticated) this.emit('authenticated', authenticated);
        resolve(conn);
      };

      const timer = setTimeout(
        () =>
          fail(
            new AttemptFailed(
              new WshubError(
                ErrorCode.ConnectFailed,
                `no handshake from ${url} within ${this.settings.connectTimeoutMs} ms`,
              ),
              false,
            ),
          ),
        this.settings.connectTimeoutMs,
      );
      run.abort = () => fail(new AttemptFailed(closedError(), false));

      ws.onopen = () => {
        if (inBand) {
          authId = this.requests.id();
          try {
            ws.send(encodeEnvelope(MessageType.Authenticate, { token }, authId));
          } catch (e) {
            fail(new AttemptFailed(toWshubError(e, ErrorCode.ConnectFailed, 'sending authenticate failed'), false));
          }
        }
      };
      ws.onerror = (ev: unknown) => {
        lastError = ev;
      };
      ws.onclose = (ev: { code?: number; reason?: string }) =>
        fail(handshakeClosed(url, ev.code ?? CloseCode.Abnormal, ev.reason ?? '', lastError, token !== undefined));
      ws.onmessage = (ev: { data: unknown }) => {
        const text = frameText(ev.data);
        // Before `connected` the server sends only small text frames; anything else is a
        // server we don't understand.
        const env = typeof text === 'string' ? parseEnvelope(text) : undefined;
        if (!env) {
          fail(new AttemptFailed(new WshubError(ErrorCode.ProtocolError, `unreadable handshake frame from ${url}`), false));
          return;
        }
        const data = env.data as Record<string, unknown>;
        switch (env.message_type) {
          case MessageType.Error: {
            const err = WshubError.fromFrame(env.data);
            // A refused token is fatal: retrying with the same token would be refused again.
            if ((authId !== undefined && env.request_id === authId) || AUTH_CODES.has(err.code)) {
              fail(new AttemptFailed(err, true));
            }
            return;
          }
          case MessageType.Authenticated: {
            if (authId === undefined || env.request_id !== authId) return;
            authenticated = env.data as Authenticated;
            // Our id already had a session (the anonymous one was this very id): the token
            // refreshed it and no second `connected` will come.
            const node = seen.get(authenticated.client_id);
            if (node !== undefined) succeed({ client_id: authenticated.client_id, node_id: node });
            return;
          }
          case MessageType.Connected: {
            const ready = { client_id: String(data.client_id), node_id: String(data.node_id) };
            if (!inBand) succeed(ready);
            else if (authenticated && authenticated.client_id === ready.client_id) succeed(ready);
            else seen.set(ready.client_id, ready.node_id);
            return;
          }
          default:
            return;
        }
      };
    });
  }

  /** A frame of an established connection; Blob frames are read in order behind each other. */
  private onData(conn: Connection, data: unknown): void {
    if (conn.decoding) {
      conn.decoding = conn.decoding.then(async () => this.onText(conn, await frameText(data)));
      return;
    }
    const text = frameText(data);
    if (typeof text === 'string' || text === undefined) {
      this.onText(conn, text);
      return;
    }
    const pending = text.then((t) => this.onText(conn, t));
    conn.decoding = pending.finally(() => {
      if (conn.decoding === pending || conn.decoding === undefined) conn.decoding = undefined;
    });
  }

  private onText(conn: Connection, text: string | undefined): void {
    if (this.conn !== conn) return;
    const env = text === undefined ? undefined : parseEnvelope(text);
    if (!env) {
      this.emit('error', new WshubError(ErrorCode.ProtocolError, 'unreadable frame from the server', { details: text }));
      return;
    }
    if (env.request_id !== undefined) {
      // A reply: to a waiting request, or a late one to a request that already timed out.
      this.requests.settle(env);
      return;
    }
    this.onPush(conn, env);
  }

  /**
   * A frame the server pushed. `lookForGaps` is false for the publication that revealed a gap
   * just filled: publications the history no longer held must not hold it up again.
   */
  private onPush(conn: Connection, env: Envelope, lookForGaps = true): void {
    const data = env.data as Record<string, unknown> | null;
    switch (env.message_type) {
      case MessageType.Error: {
        const err = WshubError.fromFrame(env.data);
        if (err.code === ErrorCode.TokenExpired) this.onTokenExpired(err);
        else this.emit('error', err);
        return;
      }
      case MessageType.Connected: {
        // A new identity on the same socket (an anonymous connection authenticated as a user):
        // the server removed the old identity from its rooms, so join them again as the new one.
        const ids = data ?? {};
        conn.clientId = String(ids.client_id);
        this.assignedClientId = conn.clientId;
        void this.rejoinRooms(conn);
        return;
      }
    }
    const roomId = data !== null && typeof data === 'object' && typeof data.room_id === 'string' ? data.room_id : undefined;
    if (roomId !== undefined) {
      // While a gap of the room is being filled, its frames wait behind it, in order.
      const fill = this.fills.get(roomId);
      if (fill) {
        fill.held.push(env);
        return;
      }
      if (env.message_type === MessageType.RoomDeleted || env.message_type === MessageType.Kicked) {
        this.rooms.forget(roomId);
      }
    }
    if (isPublication(data)) {
      const verdict = this.rooms.check(data, lookForGaps);
      if (verdict.action === 'fill') {
        this.fillGap(conn, env, data.room_id, data.offset, verdict);
        return;
      }
      if (verdict.action === 'drop') {
        if (verdict.reason === 'duplicate') this.counters.duplicatesDropped += 1;
        return;
      }
    }
    this.deliver(env);
  }

  private deliver(env: Envelope): void {
    if (PUSH_EVENTS.has(env.message_type)) {
      (this.emit as (event: string, ...args: unknown[]) => void)(env.message_type, env.data, env);
    }
    this.emit('message', env);
  }

  // ---- internals: gaps in live traffic ----

  /**
   * `trigger` (offset `before`) arrived past the offset after `gap.after`: holds the room's
   * frames and fetches the missing publications from the history on this connection.
   */
  private fillGap(
    conn: Connection,
    trigger: Envelope,
    roomId: string,
    before: number,
    gap: Extract<PublicationVerdict, { action: 'fill' }>,
  ): void {
    const fill: GapFill = { conn, held: [trigger] };
    this.fills.set(roomId, fill);
    this.counters.gaps += 1;
    this.fetchGap(conn, roomId, gap.after, before, gap.epoch)
      .then(
        (found) => this.gapFetched(fill, roomId, gap.after, before, gap.epoch, found),
        (e: unknown) =>
          this.gapFailed(
            fill,
            roomId,
            gap.after,
            before,
            gap.epoch,
            toWshubError(e, ErrorCode.ServerError, `reading the history of ${roomId} failed`),
          ),
      )
      .catch((e: unknown) => this.emit('error', toWshubError(e, ErrorCode.ProtocolError, `filling a gap in ${roomId} failed`)));
  }

  /**
   * The stored publications of `roomId` with offsets strictly between `after` and `before`,
   * oldest first. Fails when the history is of another epoch (it restarted) or can't be read.
   */
  private async fetchGap(
    conn: Connection,
    roomId: string,
    after: number,
    before: number,
    epoch: string,
  ): Promise<HistoryPublication[]> {
    const out: HistoryPublication[] = [];
    let cursor = after;
    while (cursor + 1 < before) {
      if (this.conn !== conn) throw new WshubError(ErrorCode.ConnectionLost, 'the connection ended while filling a gap');
      const limit = Math.min(before - cursor - 1, 1000);
      const reply = (
        await this.requestOn<History>(conn, MessageType.History, { room_id: roomId, since: cursor, limit })
      ).data;
      if (reply?.epoch !== epoch) {
        throw new WshubError(
          ErrorCode.ProtocolError,
          `the history of ${roomId} is of epoch ${String(reply?.epoch)}, not ${epoch}: it restarted`,
        );
      }
      let advanced = false;
      for (const p of Array.isArray(reply.publications) ? reply.publications : []) {
        if (typeof p?.offset !== 'number' || p.offset <= cursor) continue;
        if (p.offset >= before) return out;
        cursor = p.offset;
        advanced = true;
        out.push(p);
      }
      // Nothing newer stored below `before` (trimmed, or a room whose offsets jumped when its
      // history started again): what there was is all there is.
      if (!advanced) break;
    }
    return out;
  }

  /** Delivers the fetched publications of a gap, then the frames held behind it. */
  private gapFetched(
    fill: GapFill,
    roomId: string,
    after: number,
    before: number,
    epoch: string,
    found: HistoryPublication[],
  ): void {
    // The connection ended meanwhile (fills are dropped with it): the rejoin recovers the gap.
    if (this.fills.get(roomId) !== fill) return;
    this.fills.delete(roomId);
    const conn = fill.conn;
    // Left, or moved to another epoch (a rejoin that could not recover) meanwhile: the fetched
    // publications are no longer the ones the position is missing.
    if (this.rooms.position(roomId)?.epoch === epoch) {
      const fetched: Envelope[] = [];
      for (const p of found) {
        const data = p.data as unknown;
        if (!isPublication(data) || data.room_id !== roomId || data.offset !== p.offset) continue;
        fetched.push({
          message_id: 0,
          message_type: p.message_type,
          data,
          timestamp: typeof data.timestamp === 'number' ? data.timestamp : 0,
        });
      }
      // Our own publications: the server does not deliver them to us live either.
      const theirs = (env: Envelope): boolean => (env.data as RoomMessage).sender_id !== conn.clientId;
      const missing = Math.max(0, before - after - 1 - fetched.length);
      this.counters.gapMissing += missing;
      this.emit('gap', { roomId, epoch, after, before, filled: fetched.filter(theirs).length, missing });
      for (const env of fetched) {
        if (this.conn !== conn) return;
        if (this.rooms.check(env.data as RoomMessage, false).action !== 'deliver' || !theirs(env)) continue;
        this.counters.gapFilled += 1;
        this.deliver(env);
      }
    }
    this.release(conn, fill.held);
  }

  /**
   * The gap could not be read from the history: reconnect, so the rejoin's recovery replays it
   * (from the position, which the held frames never moved). Without reconnects, accept the jump.
   */
  private gapFailed(
    fill: GapFill,
    roomId: string,
    after: number,
    before: number,
    epoch: string,
    error: WshubError,
  ): void {
    if (this.fills.get(roomId) !== fill) return;
    const conn = fill.conn;
    if (this.settings.reconnect) {
      this.emit('gap', { roomId, epoch, after, before, filled: 0, missing: 0, error });
      if (this.conn === conn) this.abandon(conn, { code: CloseCode.Abnormal, reason: `could not fill a gap in ${roomId}` });
      this.fills.delete(roomId);
      return;
    }
    this.fills.delete(roomId);
    const missing = before - after - 1;
    this.counters.gapMissing += missing;
    this.emit('gap', { roomId, epoch, after, before, filled: 0, missing, error });
    this.release(conn, fill.held);
  }

  /** Processes the frames held behind a gap, in order; the first one revealed it. */
  private release(conn: Connection, held: Envelope[]): void {
    for (let i = 0; i < held.length; i++) {
      if (this.conn !== conn) return;
      this.onPush(conn, held[i]!, i !== 0);
    }
  }

  /** A request sent on `conn` only: never queued for a later connection. */
  private requestOn<T>(conn: Connection, type: string, data: unknown): Promise<Envelope<T>> {
    const id = this.requests.id();
    const { waiter, promise } = this.requests.wait([id], id, type, this.settings.requestTimeoutMs);
    this.transmit(conn, { frames: [encodeEnvelope(type, data, id)], waiter });
    return promise as Promise<Envelope<T>>;
  }

  private onSocketClosed(conn: Connection, info: CloseInfo): void {
    conn.markClosed(info);
    this.stopHeartbeat(conn);
    if (this.conn !== conn) return;
    this.conn = undefined;
    // Frames held behind gaps are dropped with the connection: the rejoin recovers them.
    this.fills.clear();
    this.requests.failSent(
      conn,
      (w) =>
        new WshubError(
          ErrorCode.ConnectionLost,
          `connection lost before the reply to ${w.type} (close ${info.code}${info.reason ? ` ${info.reason}` : ''})`,
          { details: { code: info.code, reason: info.reason } },
        ),
    );
    this.setState('disconnected', { code: info.code, reason: info.reason });
  }

  /** Gives up on a connection without waiting for its close handshake (a dead peer never answers). */
  private abandon(conn: Connection, info: CloseInfo): void {
    detach(conn.ws);
    closeQuietly(conn.ws, 4000, info.reason);
    this.onSocketClosed(conn, info);
  }

  private onTokenExpired(err: WshubError): void {
    const getToken = this.options.getToken;
    if (!getToken) {
      this.emit('error', err);
      return;
    }
    if (this.refreshing) return;
    this.refreshing = (async () => {
      try {
        const token = await getToken();
        this.token = token;
        await this.authenticate(token);
      } catch (e) {
        this.emit('error', toWshubError(e, ErrorCode.TokenExpired, 'token refresh failed'));
      } finally {
        this.refreshing = undefined;
      }
    })();
  }

  private startHeartbeat(conn: Connection): void {
    const interval = this.settings.heartbeatIntervalMs;
    if (!(interval > 0)) return;
    const timeoutMs = Math.min(this.settings.requestTimeoutMs, interval);
    const schedule = (): void => {
      conn.heartbeat = setTimeout(() => {
        if (this.conn !== conn) return;
        this.call(MessageType.Ping, { ts: Date.now() }, { timeoutMs }).then(
          () => {
            if (this.conn === conn) schedule();
          },
          (e: unknown) => {
            if (this.conn === conn && e instanceof WshubError && e.code === ErrorCode.RequestTimeout) {
              this.abandon(conn, { code: CloseCode.Abnormal, reason: 'heartbeat timeout' });
            }
          },
        );
      }, interval);
    };
    schedule();
  }

  private stopHeartbeat(conn: Connection): void {
    if (conn.heartbeat !== undefined) clearTimeout(conn.heartbeat);
    conn.heartbeat = undefined;
  }

  /**
   * After a failed attempt (connecting, or rejoining the rooms): gives up once `giveUpAfterMs`
   * has passed since the outage began (false), else waits the next backoff delay (true).
   */
  private async retryAfterFailure(
    run: Run,
    failures: number,
    outageStart: number,
    error: WshubError,
  ): Promise<boolean> {
    if (Date.now() - outageStart >= this.settings.giveUpAfterMs) {
      this.finish(
        run,
        new WshubError(ErrorCode.ConnectFailed, `gave up connecting after ${failures} attempts: ${error.message}`, {
          cause: error,
        }),
      );
      return false;
    }
    const delayMs = this.backoff.next();
    this.setState('reconnecting', { attempt: failures, delayMs, error });
    await this.sleep(run, delayMs);
    return true;
  }

  private sleep(run: Run, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms);
      function done(): void {
        clearTimeout(timer);
        run.wake = undefined;
        resolve();
      }
      run.wake = done;
    });
  }

  /** Ends a run: state `closed`, everything waiting rejected. */
  private finish(run: Run, error?: WshubError, close?: CloseInfo): void {
    run.stopped = true;
    if (this.run === run) this.run = undefined;
    const reason = error ?? closedError(close);
    for (const out of this.queue) this.requests.fail(out.waiter, reason);
    this.queue = [];
    this.requests.failAll(() => reason);
    const change: Partial<StateChange> = {};
    if (close) {
      change.code = close.code;
      change.reason = close.reason;
    }
    if (error) change.error = error;
    this.setState('closed', change);
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const w of waiters) w.reject(reason);
    if (error) this.emit('error', error);
  }

  private setState(state: ConnectionState, extra: Partial<StateChange> = {}): void {
    const previous = this.current;
    this.current = state;
    this.emit('state', { ...extra, state, previous });
  }
}

function closedError(close?: CloseInfo): WshubError {
  return new WshubError(
    ErrorCode.ClientClosed,
    close ? `the client is closed (close ${close.code}${close.reason ? ` ${close.reason}` : ''})` : 'the client is closed',
    close ? { details: close } : {},
  );
}

/**
 * Why a socket closed before `connected`. HTTP statuses are only visible through `ws`'s error
 * message ("Unexpected server response: 401"); browsers hide them, so there a refused token
 * looks like a network failure and is retried (with a fresh token from `getToken`).
 */
function handshakeClosed(url: string, code: number, reason: string, error: unknown, tokenSent: boolean): AttemptFailed {
  const text = describe(error);
  const status = /Unexpected server response: (\d{3})/.exec(text)?.[1];
  if (status !== undefined) {
    const http = Number(status);
    const details = { status: http, url };
    if (http === 401) {
      return new AttemptFailed(
        tokenSent
          ? new WshubError(ErrorCode.InvalidToken, 'the server refused the token (HTTP 401)', { details })
          : new WshubError(ErrorCode.Unauthorized, 'the server requires a token (HTTP 401)', { details }),
        true,
      );
    }
    if (http === 403) {
      return new AttemptFailed(new WshubError(ErrorCode.Forbidden, 'the server refused the connection (HTTP 403)', { details }), true);
    }
    // Other 4xx answers would repeat on every attempt; 5xx (503 while draining) are worth retrying.
    return new AttemptFailed(
      new WshubError(ErrorCode.ConnectFailed, `the server answered the upgrade with HTTP ${http}`, { details }),
      http >= 400 && http < 500,
    );
  }
  if (code === CloseCode.Unauthorized) {
    return new AttemptFailed(
      new WshubError(ErrorCode.Unauthorized, `authentication failed (close 4401${reason ? ` ${reason}` : ''})`, {
        details: { code, reason, url },
      }),
      true,
    );
  }
  return new AttemptFailed(
    new WshubError(
      ErrorCode.ConnectFailed,
      `connection to ${url} closed before the handshake completed (close ${code}${text ? `: ${text}` : ''})`,
      { details: { code, reason, url } },
    ),
    false,
  );
}

function describe(event: unknown): string {
  if (typeof event !== 'object' || event === null) return '';
  const e = event as { message?: unknown; error?: { message?: unknown } };
  if (typeof e.message === 'string') return e.message;
  if (e.error && typeof e.error.message === 'string') return e.error.message;
  return '';
}
