// Where the application is in each room it joined, and the duplicate filter built on it.
//
// The server numbers the publications of a room 1, 2, 3, ... without gaps (within an epoch) and
// delivers them in order. So "have we delivered this one?" reduces to "is its offset at or below
// the last one delivered?", and resuming after a reconnect is asking for everything after that
// offset. Positions are updated synchronously while frames are processed: several frames can be
// handled in one tick (the reply to a rejoin and the replay behind it), before any awaiting code
// would run.
//
// The same numbering shows what never arrived: a publication more than one offset past the
// position means the ones in between were stored but not delivered to this connection (made on
// another node while ours was cut off from the broker, or stored by a node that then failed to
// publish them on the bus). `check` reports such a gap instead of accepting the jump; the client
// fetches the missing ones from the room's history and feeds them back through `check`.

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
  /**
   * A join (first or rejoin) is in flight: publications can arrive before its reply and the
   * position only follows them (the reply may still move it, e.g. `recovered: false`), so no gap
   * is looked for.
   */
  pending: boolean;
}

/** How a join reply left the room. */
export type JoinOutcome = 'joined' | 'recovered' | 'gap';

/**
 * What to do with a publication (`RoomTracker.check`):
 * - `deliver`: pass it on; the position moved to it.
 * - `drop`: already delivered (`duplicate`: at or below the position) or our own (`own`: the
 *   server never delivers our publications to us live, so a replayed one is hidden too).
 * - `fill`: it is more than one offset past the position: offsets `after + 1 .. offset - 1` of
 *   `epoch` never arrived. Nothing was recorded; fetch those from the history, pass them to
 *   `check(..., false)`, then this one.
 */
export type PublicationVerdict =
  | { action: 'deliver' }
  | { action: 'drop'; reason: 'duplicate' | 'own' }
  | { action: 'fill'; after: number; epoch: string };

const DELIVER: PublicationVerdict = { action: 'deliver' };
const DUPLICATE: PublicationVerdict = { action: 'drop', reason: 'duplicate' };
const OWN: PublicationVerdict = { action: 'drop', reason: 'own' };

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
      // Our own publications past `since` are in the replay that follows: keep them to drop them.
      const own = state && state.epoch === since.epoch ? [...state.own].filter((o) => o > since.offset) : [];
      this.rooms.set(roomId, {
        epoch: since.epoch,
        offset: since.offset,
        own: new Set(own),
        joined: state?.joined ?? false,
        pending: true,
      });
    } else if (!state) {
      this.rooms.set(roomId, { epoch: undefined, offset: 0, own: new Set(), joined: false, pending: true });
    } else {
      state.pending = true;
    }
  }

  /** A join failed: a first one leaves the room untracked (it was never ours); a rejoin keeps it. */
  joinFailed(roomId: string): void {
    const state = this.rooms.get(roomId);
    if (state && !state.joined) this.rooms.delete(roomId);
    else if (state) state.pending = false;
  }

  /** Applies a join reply. `recovering` when the join carried `since`. */
  joined(roomId: string, reply: RoomJoined, recovering: boolean): JoinOutcome {
    const state = this.rooms.get(roomId) ?? {
      epoch: undefined,
      offset: 0,
      own: new Set<number>(),
      joined: false,
      pending: false,
    };
    state.joined = true;
    state.pending = false;
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
   * position (a duplicate) or one of our own; true otherwise, moving the position to it (a jump
   * past missing offsets is accepted: use `check` to detect it). Publications of rooms we do not
   * track (joined by server-side code) always pass.
   */
  accept(message: RoomMessage): boolean {
    return this.check(message, false).action === 'deliver';
  }

  /**
   * Like `accept`, with the reason for a drop; with `lookForGaps` (default), a publication more
   * than one offset past the position of a joined room (same epoch, no join in flight) is
   * reported as a gap to `fill` and not recorded.
   */
  check(message: RoomMessage, lookForGaps = true): PublicationVerdict {
    const state = this.rooms.get(message.room_id);
    const offset = message.offset;
    if (!state || typeof offset !== 'number') return DELIVER;
    if (message.epoch !== undefined && state.epoch !== undefined && message.epoch !== state.epoch) {
      // A new epoch: the room's history restarted and old offsets mean nothing any more.
      state.epoch = message.epoch;
      state.offset = offset;
      state.own.clear();
      return DELIVER;
    }
    if (offset <= state.offset) return DUPLICATE;
    if (lookForGaps && state.joined && !state.pending && state.epoch !== undefined && offset > state.offset + 1) {
      return { action: 'fill', after: state.offset, epoch: state.epoch };
    }
    if (state.epoch === undefined && message.epoch !== undefined) state.epoch = message.epoch;
    const ours = state.own.delete(offset);
    state.offset = offset;
    this.advance(state);
    return ours ? OWN : DELIVER;
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
