import { gossipsub } from '@chainsafe/libp2p-gossipsub';
import type { GossipSub } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import type { Libp2p, PrivateKey } from '@libp2p/interface';
import { ping } from '@libp2p/ping';
import { createHmac } from 'node:crypto';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import type { Identify } from '@libp2p/identify';
import type { Ping } from '@libp2p/ping';
import { installYamuxWindowThreshold } from './yamux-window.js';

export type HostServices = {
  identify: Identify;
  ping: Ping;
  pubsub: GossipSub;
};

export type Host = Libp2p<HostServices>;

export interface HostOptions {
  privateKey: PrivateKey;
  listen: string[];
  /** Contents of a cluster key file (the swarm.key format); null for an open network (--insecure). */
  swarmKey: Uint8Array | null;
}

/**
 * The Noise prologue that binds every connection to the cluster key. Both sides mix the prologue
 * into the handshake hash; it never crosses the wire. A peer with another prologue (no key, or
 * another cluster's) computes other handshake keys, so the first authenticated message fails
 * and the connection is closed before any stream opens. Unlike libp2p's private-network
 * protector (a second stream cipher over every byte, in JavaScript; measured here at a third of
 * the bulk replication rate), this costs nothing after the handshake.
 */
export function clusterPrologue(swarmKey: Uint8Array): Uint8Array {
  return new Uint8Array(createHmac('sha256', swarmKey).update('shoal/noise-prologue/1').digest());
}

/**
 * The libp2p 2.x host: TCP, Noise (bound to the cluster key by its prologue), Yamux, identify,
 * ping and gossipsub. Started by `createPeer`, not here.
 */
export async function createHost(opts: HostOptions): Promise<Host> {
  installYamuxWindowThreshold();
  const node = await createLibp2p({
    start: false,
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [noise(opts.swarmKey !== null ? { prologueBytes: clusterPrologue(opts.swarmKey) } : {})],
    streamMuxers: [yamux()],
    connectionManager: { maxConnections: 512 },
    services: {
      identify: identify(),
      ping: ping(),
      pubsub: gossipsub({
        // A lone first peer must still be able to publish its heartbeats.
        allowPublishToZeroTopicPeers: true,
        emitSelf: false,
        // Publish membership traffic to every subscribed peer, not only the mesh:
        // with tens of peers this is cheap and it makes detection independent of mesh repair.
        floodPublish: true,
        // Mesh maintenance twice a second so that a joiner is grafted quickly.
        heartbeatInterval: 500,
      }),
    },
  });
  // gossipsub() is typed as the generic PubSub; the instance is a GossipSub.
  return node as unknown as Host;
}

/** The addresses others can dial, each with `/p2p/<peer id>`. */
export function fullAddrs(host: Host): string[] {
  const id = host.peerId.toString();
  return host.getMultiaddrs().map((ma) => {
    const s = ma.toString();
    return s.includes('/p2p/') ? s : `${s}/p2p/${id}`;
  });
}
