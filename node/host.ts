import { gossipsub } from '@chainsafe/libp2p-gossipsub';
import type { GossipSub } from '@chainsafe/libp2p-gossipsub';
import { noise } from '@chainsafe/libp2p-noise';
import { yamux } from '@chainsafe/libp2p-yamux';
import { identify } from '@libp2p/identify';
import type { Libp2p, PrivateKey } from '@libp2p/interface';
import { ping } from '@libp2p/ping';
import { preSharedKey } from '@libp2p/pnet';
import { tcp } from '@libp2p/tcp';
import { createLibp2p } from 'libp2p';
import type { Identify } from '@libp2p/identify';
import type { Ping } from '@libp2p/ping';

export type HostServices = {
  identify: Identify;
  ping: Ping;
  pubsub: GossipSub;
};

export type Host = Libp2p<HostServices>;

export interface HostOptions {
  privateKey: PrivateKey;
  listen: string[];
  /** Contents of a pnet swarm key file; null for an open network. */
  swarmKey: Uint8Array | null;
}

/**
 * The libp2p 2.x host: TCP, Noise, Yamux, identify, ping and gossipsub, with
 * an optional private-network key. Started by `createPeer`, not here.
 */
export async function createHost(opts: HostOptions): Promise<Host> {
  const node = await createLibp2p({
    start: false,
    privateKey: opts.privateKey,
    addresses: { listen: opts.listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    ...(opts.swarmKey !== null ? { connectionProtector: preSharedKey({ psk: opts.swarmKey }) } : {}),
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
