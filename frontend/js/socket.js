// A websocket that reconnects by itself. Messages are JSON objects with a "type". While the connection is down,
// sends are queued and flushed on reconnect; after every (re)connect `onOpen(isReconnect)` runs so the owner can
// resync (ask for a snapshot, resend pending ops). Status changes ('connecting' | 'open' | 'closed') go to
// `onStatus` for the connection badge.

import { reconnectDelay } from './backoff.js';

export function socketUrl(path) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}${path}`;
}

export class StudioSocket {
  /**
   * @param {string} path  e.g. '/ws/annotate/12/'
   * @param {{onMessage: (msg: object) => void, onOpen?: (isReconnect: boolean) => void,
   *          onStatus?: (status: string) => void, onFatal?: (reason: string) => void}} handlers
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    this.queue = [];
    this.attempt = 0;
    this.everOpened = false;
    this.closedByUs = false;
    this.ws = null;
    this.timer = null;
    this.connect();
  }

  connect() {
    this.handlers.onStatus?.('connecting');
    const ws = new WebSocket(socketUrl(this.path));
    this.ws = ws;
    ws.addEventListener('open', () => {
      const isReconnect = this.everOpened;
      this.everOpened = true;
      this.attempt = 0;
      this.handlers.onStatus?.('open');
      this.handlers.onOpen?.(isReconnect);
      const queued = this.queue.splice(0);
      for (const message of queued) ws.send(JSON.stringify(message));
    });
    ws.addEventListener('message', (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        console.warn('ignoring a websocket message that is not JSON', event.data);
        return;
      }
      this.handlers.onMessage(message);
    });
    ws.addEventListener('close', (event) => {
      if (this.ws !== ws) return;
      this.handlers.onStatus?.('closed');
      // 4401/4403/4404: the server refused us (login, role, unknown object): retrying cannot help.
      if (event.code >= 4400 && event.code < 4500) {
        this.handlers.onFatal?.(event.reason || `the server closed the live connection (code ${event.code})`);
        return;
      }
      if (!this.closedByUs) this.timer = setTimeout(() => this.connect(), reconnectDelay(this.attempt++));
    });
  }

  get isOpen() { return this.ws?.readyState === WebSocket.OPEN; }

  /** Sends now, or queues until the connection is back. */
  send(message) {
    if (this.isOpen) this.ws.send(JSON.stringify(message));
    else this.queue.push(message);
  }

  /** Sends only if connected (cursor positions: stale ones are worthless). */
  sendIfOpen(message) {
    if (this.isOpen) this.ws.send(JSON.stringify(message));
  }

  close() {
    this.closedByUs = true;
    clearTimeout(this.timer);
    this.ws?.close();
  }
}
