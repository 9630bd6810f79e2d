import { Cluster, kvPath, request } from './dist/test/integration/process-cluster.js';
import { ProcessPeer } from './dist/test/integration/harness.js';
import http from 'node:http';
import { readdirSync, statSync, truncateSync } from 'node:fs';
import { join } from 'node:path';
const c = await Cluster.create();
try {
await c.startPeers(3);
await c.waitSettled('start', 60000);
const agent = new http.Agent({ keepAlive: true });
for (let k = 0; k < 300; k++) { const r = await request(agent, c.peers[0].httpAddress, 'PUT', kvPath('k' + k), Buffer.from('v' + k), 5000); if (r.status !== 200) console.log('put', r.status); }
const st = await c.status(c.peers[0]);
const victimIdx = c.peers.findIndex(p => p.peerId !== st.coordinator);
const victim = c.peers[victimIdx];
victim.signal('SIGKILL'); await victim.waitExit();
const dbdir = join(victim.dataDir, 'db');
const logs = readdirSync(dbdir).filter(f => f.endsWith('.log')).map(f => ({ f, size: statSync(join(dbdir, f)).size, mtime: statSync(join(dbdir, f)).mtimeMs })).sort((a, b) => b.mtime - a.mtime);
console.log('logs', logs);
truncateSync(join(dbdir, logs[0].f), Math.floor(logs[0].size / 2));
const again = await ProcessPeer.start(victim.dataDir, { join: [c.peers.find(p => p !== victim).joinAddr] });
c.peers[victimIdx] = again;
for (let t = 0; t < 10; t++) {
  await new Promise(r => setTimeout(r, 1000));
  let bad = 0; for (let k = 0; k < 300; k += 10) { const r = await request(agent, again.httpAddress, 'GET', kvPath('k' + k), undefined, 3000).catch(e => ({ status: e.message })); if (r.status !== 200) bad++; }
  const h = await fetch(`http://${again.httpAddress}/healthz`).then(r => r.status).catch(e => e.message);
  const s = await c.status(again).catch(e => ({ role: e.message }));
  console.log(t, 'bad reads', bad, 'healthz', h, 'role', s.role, 'commit', s.commitIndex, 'writable', s.shards?.writableShards);
}
console.log(again.stderr.split('\n').filter(l => /error|warn/.test(l)).slice(0, 8).join('\n').slice(0, 3000));
} finally { await c.destroy(); }
