import { generateKeyPair, privateKeyFromProtobuf, privateKeyToProtobuf } from '@libp2p/crypto/keys';
import type { PrivateKey } from '@libp2p/interface';
import type { KvStore } from '../storage/kv-store.js';

const KEY = 'private-key';
const INCARNATION = 'incarnation';

/**
 * The peer's Ed25519 key, created on first start and kept in the data dir so
 * that a restarted peer keeps its peer id. Synced: losing it would turn the
 * peer into a stranger after a power cut.
 */
export async function loadOrCreatePrivateKey(meta: KvStore): Promise<{ key: PrivateKey; created: boolean }> {
  const stored = await meta.get(KEY);
  // @libp2p/crypto 5.1.x declares @libp2p/interface 3 types; the objects are the same at run time.
  if (stored !== undefined) return { key: privateKeyFromProtobuf(stored) as unknown as PrivateKey, created: false };
  const key = await generateKeyPair('Ed25519');
  await meta.put(KEY, privateKeyToProtobuf(key), { sync: true });
  return { key: key as unknown as PrivateKey, created: true };
}

/** The incarnation to start with: one above the last one this data dir used, so a restart outranks any verdict on the old run. */
export async function nextIncarnation(meta: KvStore): Promise<number> {
  const stored = await meta.get(INCARNATION);
  const last = stored === undefined ? 0 : Number(new TextDecoder().decode(stored));
  const next = Number.isSafeInteger(last) && last >= 0 ? last + 1 : 1;
  await saveIncarnation(meta, next);
  return next;
}

export async function saveIncarnation(meta: KvStore, incarnation: number): Promise<void> {
  await meta.put(INCARNATION, new TextEncoder().encode(String(incarnation)), { sync: true });
}
