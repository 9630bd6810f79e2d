import { InvalidMessageError } from '../protocols/errors.js';

/**
 * RPC frames. Each frame travels inside an unsigned-varint length prefix
 * (it-length-prefixed); the frame itself is a fixed binary header and a raw
 * body, all integers big-endian:
 *
 * ```
 * request  0x01 | id u32 | timeoutMs u32 | body…
 * ok       0x02 | id u32 | body…
 * error    0x03 | id u32 | codeLen u8 | code (ASCII [A-Za-z0-9_.-], 1..64) | msgLen u16 | message (UTF-8, ≤ 1024)
 * ```
 *
 * `id` is 1..2^32-1 (0 is never used). `timeoutMs` (≥ 1) is the caller's
 * remaining deadline, so the serving side can abort its handler when the
 * caller has given up. An error frame must end exactly after the message.
 */
export const FRAME_REQUEST = 0x01;
export const FRAME_OK = 0x02;
export const FRAME_ERROR = 0x03;

export const REQUEST_HEADER_BYTES = 9;
export const RESPONSE_HEADER_BYTES = 5;
export const MAX_REQUEST_ID = 0xffff_ffff;
export const MAX_FRAME_TIMEOUT_MS = 0xffff_ffff;
export const MAX_ERROR_CODE_BYTES = 64;
export const MAX_ERROR_MESSAGE_BYTES = 1024;

export type RpcFrame =
  | { type: 'request'; id: number; timeoutMs: number; body: Uint8Array }
  | { type: 'ok'; id: number; body: Uint8Array }
  | { type: 'error'; id: number; code: string; message: string };

const CODE_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** True for a string that may travel as an error code. */
export function isValidErrorCode(code: unknown): code is string {
  return typeof code === 'string' && CODE_RE.test(code);
}

function assertId(id: number): void {
  if (!Number.isInteger(id) || id < 1 || id > MAX_REQUEST_ID) throw new Error(`assertion: rpc id ${id} out of range`);
}

export function encodeRequestFrame(id: number, timeoutMs: number, body: Uint8Array): Uint8Array {
  assertId(id);
  if (!Number.isInteger(timeoutMs) || timeoutMs < 1 || timeoutMs > MAX_FRAME_TIMEOUT_MS) {
    throw new Error(`assertion: rpc timeoutMs ${timeoutMs} out of range`);
  }
  const out = new Uint8Array(REQUEST_HEADER_BYTES + body.length);
  const view = new DataView(out.buffer);
  out[0] = FRAME_REQUEST;
  view.setUint32(1, id);
  view.setUint32(5, timeoutMs);
  out.set(body, REQUEST_HEADER_BYTES);
  return out;
}

export function encodeOkFrame(id: number, body: Uint8Array): Uint8Array {
  assertId(id);
  const out = new Uint8Array(RESPONSE_HEADER_BYTES + body.length);
  out[0] = FRAME_OK;
  new DataView(out.buffer).setUint32(1, id);
  out.set(body, RESPONSE_HEADER_BYTES);
  return out;
}

/** `code` must be valid (see isValidErrorCode); `message` is cut to 1024 bytes at a character boundary. */
export function encodeErrorFrame(id: number, code: string, message: string): Uint8Array {
  assertId(id);
  if (!isValidErrorCode(code)) throw new Error(`assertion: invalid rpc error code ${JSON.stringify(code)}`);
  const codeBytes = utf8.encode(code);
  let msg = utf8.encode(message);
  if (msg.length > MAX_ERROR_MESSAGE_BYTES) {
    let cut = MAX_ERROR_MESSAGE_BYTES;
    // Step back over UTF-8 continuation bytes so the cut stays valid UTF-8.
    while (cut > 0 && ((msg[cut] as number) & 0xc0) === 0x80) cut--;
    msg = msg.subarray(0, cut);
  }
  const out = new Uint8Array(RESPONSE_HEADER_BYTES + 1 + codeBytes.length + 2 + msg.length);
  const view = new DataView(out.buffer);
  out[0] = FRAME_ERROR;
  view.setUint32(1, id);
  out[5] = codeBytes.length;
  out.set(codeBytes, 6);
  view.setUint16(6 + codeBytes.length, msg.length);
  out.set(msg, 8 + codeBytes.length);
  return out;
}

/**
 * Decode one frame from untrusted bytes; throws InvalidMessageError on anything
 * malformed. Bodies are copied, so they do not pin the stream's read buffer.
 */
export function decodeRpcFrame(bytes: Uint8Array): RpcFrame {
  if (bytes.length < RESPONSE_HEADER_BYTES) throw new InvalidMessageError(`rpc frame of ${bytes.length} bytes is shorter than a header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const type = bytes[0];
  const id = view.getUint32(1);
  if (id === 0) throw new InvalidMessageError('rpc frame with id 0');
  switch (type) {
    case FRAME_REQUEST: {
      if (bytes.length < REQUEST_HEADER_BYTES) throw new InvalidMessageError('rpc request shorter than its header');
      const timeoutMs = view.getUint32(5);
      if (timeoutMs === 0) throw new InvalidMessageError('rpc request with timeoutMs 0');
      return { type: 'request', id, timeoutMs, body: bytes.slice(REQUEST_HEADER_BYTES) };
    }
    case FRAME_OK:
      return { type: 'ok', id, body: bytes.slice(RESPONSE_HEADER_BYTES) };
    case FRAME_ERROR: {
      if (bytes.length < RESPONSE_HEADER_BYTES + 1) throw new InvalidMessageError('rpc error frame without a code length');
      const codeLen = bytes[5] as number;
      if (codeLen < 1 || codeLen > MAX_ERROR_CODE_BYTES) throw new InvalidMessageError(`rpc error code length ${codeLen}`);
      const msgLenAt = 6 + codeLen;
      if (bytes.length < msgLenAt + 2) throw new InvalidMessageError('rpc error frame truncated in its code');
      const msgLen = view.getUint16(msgLenAt);
      if (msgLen > MAX_ERROR_MESSAGE_BYTES) throw new InvalidMessageError(`rpc error message of ${msgLen} bytes`);
      if (bytes.length !== msgLenAt + 2 + msgLen) throw new InvalidMessageError('rpc error frame length does not match its fields');
      let code: string;
      let message: string;
      try {
        code = utf8Strict.decode(bytes.subarray(6, msgLenAt));
        message = utf8Strict.decode(bytes.subarray(msgLenAt + 2));
      } catch {
        throw new InvalidMessageError('rpc error frame is not valid UTF-8');
      }
      if (!isValidErrorCode(code)) throw new InvalidMessageError('rpc error code has characters outside [A-Za-z0-9_.-]');
      return { type: 'error', id, code, message };
    }
    default:
      throw new InvalidMessageError(`unknown rpc frame type ${type}`);
  }
}
