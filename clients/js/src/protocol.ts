// The wire protocol as the server speaks it: GoHub's JSON envelope, the message type names and
// the `data` payload of every built-in type. Field names stay exactly as on the wire
// (snake_case) so a payload can be logged, stored or forwarded without a mapping layer, and so
// these types double as documentation of the protocol.

/** One frame. The server writes GoHub's field order; `request_id` only on replies. */
export interface Envelope<D = unknown> {
  message_id: number;
  message_type: string;
  data: D;
  timestamp: number;
  request_id?: number;
}

/** Wire names of the built-in message types. */
export const MessageType = {
  Ping: 'ping',
  Pong: 'pong',
  JoinRoom: 'join_room',
  RoomJoined: 'room_joined',
  LeaveRoom: 'leave_room',
  RoomLeft: 'room_left',
  RoomMessage: 'room_message',
  DirectMessage: 'direct_message',
  Error: 'error',
  Connected: 'connected',
  CreateRoom: 'create_room',
  RoomCreated: 'room_created',
  DeleteRoom: 'delete_room',
  RoomDeleted: 'room_deleted',
  ListRooms: 'list_rooms',
  RoomList: 'room_list',
  RoomMembers: 'room_members',
  Broadcast: 'broadcast',
  Authenticate: 'authenticate',
  Authenticated: 'authenticated',
  Kick: 'kick',
  Kicked: 'kicked',
  PresenceJoin: 'presence_join',
  PresenceLeave: 'presence_leave',
  Published: 'published',
  History: 'history',
} as const;

export type MessageTypeName = (typeof MessageType)[keyof typeof MessageType];

/** A place in a room's history: `offset` counts publications (1, 2, 3, ...) within `epoch`. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/** `connected`: the first frame of every session (and again after an identity change). */
export interface Connected {
  client_id: string;
  node_id: string;
}

export interface Pong {
  ts: number;
  server_ts: number;
  rtt: number;
}

/**
 * `room_joined`. `epoch` and `offset` (the room's latest offset) are present when the server
 * keeps history; `recovered` only when the join asked for recovery with `since`.
 */
export interface RoomJoined {
  room_id: string;
  status: 'joined';
  recovered?: boolean;
  epoch?: string;
  offset?: number;
}

export interface RoomLeft {
  room_id: string;
  status: 'left';
}

/** Ack of a room message; `offset`/`epoch` when the room keeps history. */
export interface Published {
  room_id: string;
  offset?: number;
  epoch?: string;
}

export interface RoomCreated {
  room_id: string;
  name: string;
  max_clients: number;
}

export interface RoomDeleted {
  room_id: string;
}

/** One room of `room_list`; `max_clients` 0 means unlimited. */
export interface RoomInfo {
  id: string;
  name: string;
  max_clients: number;
  members: number;
}

export interface RoomList {
  rooms: RoomInfo[];
}

/** A member; `info` is the `info` claim of its token when it has one. */
export interface Member {
  client_id: string;
  info?: unknown;
}

export interface RoomMembers {
  room_id: string;
  members: Member[];
}

/** A room publication as delivered (`room_message`, or a custom type the server published). */
export interface RoomMessage<C = unknown> {
  content: C;
  room_id: string;
  sender_id: string;
  timestamp: number;
  offset?: number;
  epoch?: string;
}

export interface DirectMessage<C = unknown> {
  content: C;
  sender_id: string;
  timestamp: number;
}

export interface BroadcastMessage<C = unknown> {
  content: C;
  sender_id: string;
  timestamp: number;
}

export interface PresenceJoin {
  room_id: string;
  client_id: string;
  info?: unknown;
}

export interface PresenceLeave {
  room_id: string;
  client_id: string;
}

export interface HistoryPublication {
  offset: number;
  message_type: string;
  data: RoomMessage;
}

export interface History {
  room_id: string;
  epoch: string;
  publications: HistoryPublication[];
}

/** `expires_at` is in Unix seconds, `null` for a token without `exp`. */
export interface Authenticated {
  client_id: string;
  expires_at: number | null;
}

/** Reply to `kick`. */
export interface Kicked {
  room_id: string;
  client_id: string;
}

/** What the kicked member receives. */
export interface KickedNotice {
  room_id: string;
  by: string;
}

/** `data` of an `error` frame. `request_id` is 0 for errors not caused by a request. */
export interface ErrorData {
  code: number;
  message: string;
  request_id: number;
  details?: unknown;
}

/** Serializes a client envelope. The server ignores `timestamp` inbound; GoHub clients send it. */
export function encodeEnvelope(type: string, data: unknown, requestId?: number): string {
  const env: Partial<Envelope> = { message_type: type, data: data ?? {}, timestamp: Date.now() };
  if (requestId !== undefined) env.request_id = requestId;
  return JSON.stringify(env);
}

/** Parses a server frame; `undefined` for anything that is not an envelope. */
export function parseEnvelope(text: string): Envelope | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const env = value as Partial<Envelope>;
  if (typeof env.message_type !== 'string') return undefined;
  return {
    message_id: typeof env.message_id === 'number' ? env.message_id : 0,
    message_type: env.message_type,
    data: env.data ?? null,
    timestamp: typeof env.timestamp === 'number' ? env.timestamp : 0,
    ...(typeof env.request_id === 'number' && env.request_id !== 0
      ? { request_id: env.request_id }
      : {}),
  };
}

/**
 * True for a pushed frame that holds a room publication with a history position. Any message
 * type counts, not only `room_message`: server-side code can publish custom types to a room and
 * those are stored, numbered and replayed the same way.
 */
export function isPublication(data: unknown): data is RoomMessage & { offset: number } {
  if (typeof data !== 'object' || data === null) return false;
  const d = data as Record<string, unknown>;
  return typeof d.room_id === 'string' && typeof d.offset === 'number';
}
