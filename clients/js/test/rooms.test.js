// The duplicate filter and position bookkeeping, fed frames directly.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { RoomTracker } from '../dist/index.js';

const msg = (offset, epoch = 'e1', room = 'r') => ({ content: offset, room_id: room, sender_id: 'x', timestamp: 0, offset, epoch });

test('drops publications at or below the delivered offset', () => {
  const t = new RoomTracker();
  t.joining('r');
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 3 }, false);
  const seen = [4, 5, 5, 4, 6, 3, 7].filter((o) => t.accept(msg(o)));
  assert.deepEqual(seen, [4, 5, 6, 7]);
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 7 });
});

test('publications delivered before the first join reply are kept and not repeated', () => {
  const t = new RoomTracker();
  t.joining('r');
  assert.equal(t.accept(msg(9)), true);
  // The reply says the room was at 8 when we joined; we are already past it.
  assert.equal(t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 8 }, false), 'joined');
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 9 });
  assert.equal(t.accept(msg(9)), false);
});

test('rejoin: recovered keeps the position, a gap jumps to the room offset', () => {
  const t = new RoomTracker();
  t.joining('r');
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 0 }, false);
  t.accept(msg(1));
  t.accept(msg(2));
  assert.deepEqual(t.rejoinList(), [{ roomId: 'r', since: { epoch: 'e1', offset: 2 } }]);

  t.joining('r', { epoch: 'e1', offset: 2 });
  assert.equal(t.joined('r', { room_id: 'r', status: 'joined', recovered: true, epoch: 'e1', offset: 5 }, true), 'recovered');
  assert.deepEqual([3, 4, 5].map((o) => t.accept(msg(o))), [true, true, true]);

  t.joining('r', { epoch: 'e1', offset: 5 });
  assert.equal(t.joined('r', { room_id: 'r', status: 'joined', recovered: false, epoch: 'e2', offset: 40 }, true), 'gap');
  assert.deepEqual(t.position('r'), { epoch: 'e2', offset: 40 });
  assert.equal(t.accept(msg(40, 'e2')), false);
  assert.equal(t.accept(msg(41, 'e2')), true);
});

test('a new epoch in live traffic restarts the numbering', () => {
  const t = new RoomTracker();
  t.joining('r');
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 100 }, false);
  assert.equal(t.accept(msg(1, 'e2')), true);
  assert.equal(t.accept(msg(2, 'e2')), true);
  assert.equal(t.accept(msg(2, 'e2')), false);
});

test('own publications move the position and are dropped when replayed', () => {
  const t = new RoomTracker();
  t.joining('r');
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 0 }, false);
  t.accept(msg(1));
  // Ours right after the position: passed at once.
  t.published({ room_id: 'r', offset: 2, epoch: 'e1' });
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 2 });
  // Ours after someone else's that has not arrived yet: waits for it.
  t.published({ room_id: 'r', offset: 4, epoch: 'e1' });
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 2 });
  assert.equal(t.accept(msg(3)), true);
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 4 });
  // A replay of our own message is not shown.
  assert.equal(t.accept(msg(4)), false);
  assert.equal(t.accept(msg(5)), true);
});

test('rooms without history pass everything; untracked rooms pass; failed first joins are forgotten', () => {
  const t = new RoomTracker();
  t.joining('plain');
  t.joined('plain', { room_id: 'plain', status: 'joined' }, false);
  assert.deepEqual(t.rejoinList(), [{ roomId: 'plain' }]);
  assert.equal(t.accept({ content: 1, room_id: 'plain', sender_id: 'x', timestamp: 0 }), true);
  assert.equal(t.accept(msg(1, 'e1', 'elsewhere')), true);
  t.joining('denied');
  t.joinFailed('denied');
  assert.equal(t.has('denied'), false);
  assert.deepEqual(t.joinedRooms(), ['plain']);
});

test('check: a jump past the next offset is a gap to fill, recorded only once the missing ones are fed back', () => {
  const t = new RoomTracker();
  t.joining('r');
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 0 }, false);
  assert.deepEqual(t.check(msg(1)), { action: 'deliver' });
  assert.deepEqual(t.check(msg(4)), { action: 'fill', after: 1, epoch: 'e1' });
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 1 }, 'nothing recorded for the gap');
  // The fill: what the history had, then the publication that revealed the gap.
  assert.deepEqual([2, 3, 4].map((o) => t.check(msg(o), false).action), ['deliver', 'deliver', 'deliver']);
  assert.deepEqual(t.check(msg(3)), { action: 'drop', reason: 'duplicate' });
  // A fill that found nothing (out of the history window): the jump is accepted without looking.
  assert.deepEqual(t.check(msg(9), false), { action: 'deliver' });
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 9 });
  // accept() keeps its meaning: jumps pass.
  assert.equal(t.accept(msg(12)), true);
});

test('check: no gap while a join is in flight, in another epoch, or in a room without history', () => {
  const t = new RoomTracker();
  t.joining('r');
  // Publications before the first join's reply: the reply decides where the room starts.
  assert.deepEqual(t.check(msg(7)), { action: 'deliver' });
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 5 }, false);
  assert.deepEqual(t.check(msg(9)).action, 'fill');
  // A rejoin in flight: the reply may move the position (recovered: false).
  t.joining('r', { epoch: 'e1', offset: 7 });
  assert.deepEqual(t.check(msg(40)), { action: 'deliver' });
  t.joined('r', { room_id: 'r', status: 'joined', recovered: false, epoch: 'e1', offset: 41 }, true);
  assert.deepEqual(t.check(msg(43)).action, 'fill');
  // A failed rejoin leaves the room tracked, and gaps looked for again.
  t.joining('r', { epoch: 'e1', offset: 41 });
  t.joinFailed('r');
  assert.equal(t.has('r'), true);
  assert.deepEqual(t.check(msg(43)).action, 'fill');
  // A new epoch restarts the numbering: not a gap.
  assert.deepEqual(t.check(msg(5, 'e2')), { action: 'deliver' });
  t.joining('plain');
  t.joined('plain', { room_id: 'plain', status: 'joined' }, false);
  assert.deepEqual(t.check({ ...msg(3, undefined, 'plain'), epoch: undefined }), { action: 'deliver' });
});

test('own publications past the position survive a rejoin, so their replay is dropped', () => {
  const t = new RoomTracker();
  t.joining('r');
  t.joined('r', { room_id: 'r', status: 'joined', epoch: 'e1', offset: 3 }, false);
  // Ours at 5 while 4 is still missing (never arrived live): the position stays at 3.
  t.published({ room_id: 'r', offset: 5, epoch: 'e1' });
  assert.deepEqual(t.rejoinList(), [{ roomId: 'r', since: { epoch: 'e1', offset: 3 } }]);
  t.joining('r', { epoch: 'e1', offset: 3 });
  assert.equal(t.joined('r', { room_id: 'r', status: 'joined', recovered: true, epoch: 'e1', offset: 6 }, true), 'recovered');
  // The replay: 4, ours, 6.
  assert.deepEqual([4, 5, 6].map((o) => t.check(msg(o)).action), ['deliver', 'drop', 'deliver']);
  assert.deepEqual(t.position('r'), { epoch: 'e1', offset: 6 });
});
