/**
 * Yamux window updates only when half the receive window has been consumed.
 *
 * @chainsafe/libp2p-yamux 7 sends a WindowUpdate frame back every time a stream's reader takes a
 * chunk, however small. Each is a frame of its own: a Noise message, a socket write and a wake-up
 * of the other side, for nothing but bookkeeping. Our streams carry small frames (an RPC request,
 * a replication batch), so half of all socket writes on a peer connection were these 12-byte
 * updates (measured with strace at concurrency 1: 1,054 of 2,521 writes in 3 s on one peer).
 *
 * HashiCorp's yamux (the Go original the spec comes from) updates only once the consumed part
 * reaches half the window; this does the same. The sender then has at least half a window
 * (128 KiB at the initial 256 KiB) in flight before it waits, so bulk transfer keeps its pace;
 * a stream being opened or accepted (SYN/ACK still owed) updates at once, as before.
 *
 * The library's own method does the rest (window growth, the update frame), unchanged. Its
 * fields are private in the typings, so they are read through a narrow structural type, and
 * `installYamuxWindowThreshold` checks that a fresh stream still has them before it patches.
 */
import { StreamState, YamuxStream } from '@chainsafe/libp2p-yamux/stream';

interface WindowFields {
  state: StreamState;
  recvWindow: number;
  recvWindowCapacity: number;
}

/** Whether a window update is due: a SYN or ACK is owed, or half the window is consumed. */
export function windowUpdateDue(state: StreamState, recvWindow: number, recvWindowCapacity: number): boolean {
  if (state === StreamState.Init || state === StreamState.SYNReceived) return true;
  return recvWindow - recvWindowCapacity >= recvWindow / 2;
}

let installed = false;

/** Patches YamuxStream once per process (a library without the method is left alone). */
export function installYamuxWindowThreshold(): void {
  if (installed) return;
  const proto = YamuxStream.prototype as unknown as { sendWindowUpdate?: () => void };
  const original = proto.sendWindowUpdate;
  if (typeof original !== 'function') return;
  proto.sendWindowUpdate = function (this: Partial<WindowFields>): void {
    // A stream without the fields we expect (another library version) keeps the library's rule.
    const known = typeof this.state === 'number' && typeof this.recvWindow === 'number' && typeof this.recvWindowCapacity === 'number';
    if (known && !windowUpdateDue(this.state!, this.recvWindow!, this.recvWindowCapacity!)) return;
    original.call(this);
  };
  installed = true;
}

/** For tests: whether the patch is in place. */
export function yamuxWindowThresholdInstalled(): boolean {
  return installed;
}
