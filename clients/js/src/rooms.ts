// Where the application is in each room it joined, and the duplicate filter built on it.
//
// The server numbers the publications of a room 1, 2, 3, ... without gaps (within an epoch) and
// delivers them in order. So "have we delivered this one?" reduces to "is its offset at or below
// the last one delivered?", and resuming after a reconnect is asking for everything after that
// offset. Positions are updated synchronously while frames are processed: several frames can be
// handled in one tick (the reply to a rejoin and the replay behind it), before any awaiting code
// would run.

import type { Published, RoomJoined, RoomMessage, StreamPosition } from './protocol.js';

interface RoomState {
  /** Unknown until the server tells us (join reply or first publication), or when it has no history. */
  epoch: string | undefined;
  /** Offset of the last publication delivered to the application (or the room's offset at join). */
  offset: number;
  /**
   * Offsets of our own publications (acked with `published`) not yet passed by `offset`. The
   * server never delivers our own messages to us live, yet replays them after a reconnect; these
   * let the position move past them and let a replay of them be dropped, so the application sees
   * the same stream whether or not a reconnect happened.
   */
  own: Set<number>;
  /** False while the first join is in flight. */
  joined: boolean;
}

/** How a join reply left the room. */
export type JoinOutcome = 'joined' | 'recovered' | 'gap';

export class RoomTracker {
  private readonly rooms = new Map<string, RoomState>();

  /**
   * A join was sent. Publications of the room can arrive before its reply (the server subscribes
   * the connection first), so tracking starts now. With `since`, the position is set to it so
   * the replay that follows the reply is filtered against it.
   */
  joining(roomId: string, since?: StreamPosition): void {
    const state = this.rooms.get(roomId);
    if (since) {
      this.rooms.set(roomId, {
        epoch: since.epoch,
        offset: since.offset,
        own: new Set(),
        joined: state?.joined ?? false,
      });
    } else if (!state) {
      this.rooms.set(roomId, { epoch: undefined, offset: 0, own: new Set(), joined: false });
    }
  }

  /** A first join failed: the room was never ours. */
  joinFailed(roomId: string): void {
    const state = this.rooms.get(roomId);
    if (state && !state.joined) this.rooms.delete(roomId);
  }

  /** Applies a join reply. `recovering` when the join carried `since`. */
  joined(roomId: string, reply: RoomJoined, recovering: boolean): JoinOutcome {
    const state = this.rooms.get(roomId) ?? { epoch: undefined, offset: 0, own: new Set<number>(), joined: false };
    state.joined = true;
    this.rooms.set(roomId, state);
    if (recovering && reply.recovered === true) return 'recovered';
    const epoch = reply.epoch;
    const latest = typeof reply.offset === 'number' ? reply.offset : 0;
    if (recovering) {
      // Recovery impossible (history lost or too short): nothing will be replayed, the room
      // continues from where it is now. The application has to reload what it missed.
      state.epoch = epoch;
      state.offset = latest;
      state.own.clear();
      return 'gap';
    }
    if (epoch !== undefined && state.epoch !== undefined && state.epoch !== epoch) state.own.clear();
    // A first join starts at the room's current offset; publications delivered before the reply
    // may already have moved the position further.
    state.offset = state.epoch === epoch ? Math.max(state.offset, latest) : latest;
    state.epoch = epoch;
    this.advance(state);
    return 'joined';
  }

  /** Records the ack of our own publication (see `RoomState.own`). */
  published(ack: Published): void {
    const state = this.rooms.get(ack.room_id);
    if (!state || typeof ack.offset !== 'number') return;
    if (ack.epoch !== undefined && state.epoch !== undefined && ack.epoch !== state.epoch) return;
    if (ack.offset <= state.offset) return;
    state.own.add(ack.offset);
    this.advance(state);
  }

  /**
   * Decides whether a publication reaches the application: false for one at or below the
   * position (a duplicate) or one of our own; true otherwise, moving the position to it.
   * Publications of rooms we do not track (joined by server-side code) always pass.
   */
  accept(message: RoomMessage): boolean {
    const state = this.rooms.get(message.room_id);
    const offset = message.offset;
    if (!state || typeof offset !== 'number') return true;
    if (message.epoch !== undefined && state.epoch !== undefined && message.epoch !== state.epoch) {
      // A new epoch: the room's history restarted and old offsets mean nothing any more.
      state.epoch = message.epoch;
      state.offset = offset;
      state.own.clear();
      return true;
    }
    if (offset <= state.offset) return false;
    if (state.epoch === undefined && message.epoch !== undefined) state.epoch = message.epoch;
    const ours = state.own.delete(offset);
    state.offset = offset;
    this.advance(state);
    return !ours;
  }

  /** Stops tracking a room (left, deleted, kicked, or rejoining failed). */
  forget(roomId: string): void {
    this.rooms.delete(roomId);
  }

  /** Rooms to rejoin after a reconnect, with the position to resume from when there is one. */
  rejoinList(): Array<{ roomId: string; since?: StreamPosition }> {
    const out: Array<{ roomId: string; since?: StreamPosition }> = [];
    for (const [roomId, state] of this.rooms) {
      if (!state.joined) continue;
      out.push(state.epoch !== undefined ? { roomId, since: { epoch: state.epoch, offset: state.offset } } : { roomId });
    }
    return out;
  }

  /** The position of a joined room, e.g. to persist it and pass it to `joinRoom` later. */
  position(roomId: string): StreamPosition | undefined {
    const state = this.rooms.get(roomId);
    if (!state || state.epoch === undefined) return undefined;
    return { epoch: state.epoch, offset: state.offset };
  }

  /** Rooms the application joined (and has not left). */
  joinedRooms(): string[] {
    return [...this.rooms].filter(([, s]) => s.joined).map(([id]) => id);
  }

  has(roomId: string): boolean {
    return this.rooms.has(roomId);
  }

  /**
   * Offsets are contiguous, so our own publication right after the position can be passed at
   * once: nobody else's message can sit between them.
   */
  private advance(state: RoomState): void {
    while (state.own.delete(state.offset + 1)) state.offset += 1;
    for (const o of state.own) if (o <= state.offset) state.own.delete(o);
  }
}
