// What the client needs from a WebSocket implementation, and the glue around it.
//
// The client is written against the WHATWG WebSocket interface (`onopen`, `onmessage`, ...),
// which browsers, Node 22's global and the `ws` package all implement. Nothing here imports a
// WebSocket: in Node 20 the application passes one in, so the package has no runtime dependency.

/** The subset of the WHATWG WebSocket the client uses. */
export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  // Handlers take `any`: each implementation has its own event classes, and a narrower type
  // here would make the browser's and `ws`'s constructors unassignable to WebSocketConstructor.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `readyState` of an open socket (the same number in every implementation). */
export const OPEN = 1;

/** The constructor to use: the one given, else the global one, else a clear error. */
export function resolveWebSocket(given?: WebSocketConstructor): WebSocketConstructor {
  if (given) return given;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return global;
  throw new TypeError(
    'wshub-client: no WebSocket implementation found. Pass one in the options, e.g. ' +
      "`import WebSocket from 'ws'; new WshubClient({ url, WebSocket })` on Node 20, " +
      'or run where globalThis.WebSocket exists (browsers, Node 22+).',
  );
}

/** `url` with query parameters set (replacing any of the same name); undefined values are skipped. */
export function withQuery(url: string, params: Record<string, string | undefined>): string {
  const u = new URL(url);
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined) u.searchParams.set(key, value);
  }
  return u.toString();
}

/** Throws a TypeError naming the URL when it is not an absolute ws:// or wss:// URL. */
export function checkUrl(url: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new TypeError(`wshub-client: invalid URL ${JSON.stringify(url)}`);
  }
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`wshub-client: URL must start with ws:// or wss://, got ${JSON.stringify(url)}`);
  }
}

const decoder = typeof TextDecoder === 'function' ? new TextDecoder() : undefined;

/**
 * The text of a received frame. The server sends text frames, which every implementation hands
 * over as strings; binary frames (GoHub accepts both) arrive as an ArrayBuffer, a Node Buffer, or
 * — if an implementation ignores `binaryType` — a Blob, whose text can only be read
 * asynchronously.
 */
export function frameText(data: unknown): string | Promise<string> | undefined {
  if (typeof data === 'string') return data;
  if (decoder) {
    if (data instanceof ArrayBuffer) return decoder.decode(new Uint8Array(data));
    if (ArrayBuffer.isView(data)) return decoder.decode(data);
  }
  if (typeof Blob === 'function' && data instanceof Blob) return data.text();
  return undefined;
}

/** Why a socket closed, as the client reports it. */
export interface CloseInfo {
  code: number;
  reason: string;
}

/** Closes a socket without letting a throwing implementation (or a bad code) escape. */
export function closeQuietly(ws: WebSocketLike, code?: number, reason?: string): void {
  try {
    ws.close(code, reason);
  } catch {
    try {
      ws.close();
    } catch {
      // Already closed or never opened: nothing left to do.
    }
  }
}

/**
 * Detaches the client from a socket it is done with. The error handler stays (as a no-op)
 * because `ws` turns an 'error' event without a listener into an uncaught exception.
 */
export function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
  ws.onerror = () => {};
}
