// Shoal's dashboard: polls /v1/dashboard every second and draws it. No framework, no build
// step. Everything from the server is put in the page as text (textContent, attributes),
// never as HTML: peer ids, addresses and task types come from the network.

const POLL_MS = 1000;
const SVG = 'http://www.w3.org/2000/svg';
const PALETTE = ['#4ea1ff', '#3ecf8e', '#f5b942', '#c678dd', '#f0616d', '#56c7d8', '#e48a4e', '#9bd35a', '#d46fa9', '#8f9cff'];
const TOKEN_KEY = 'shoal-token';

const $ = (id) => document.getElementById(id);

/** An element with attributes and children (strings become text nodes). */
function h(tag, attrs = {}, ...children) {
  const el = tag.startsWith('svg:') ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) if (v !== null && v !== undefined) el.setAttribute(k, String(v));
  for (const c of children.flat()) if (c !== null && c !== undefined) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const short = (id) => (typeof id === 'string' && id.length > 8 ? '…' + id.slice(-6) : String(id ?? '–'));

function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) (n /= 1024), i++;
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

function duration(ms) {
  if (typeof ms !== 'number' || !Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 120_000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.round(ms / 60_000)} min`;
}

// ---- the token -------------------------------------------------------------------------------

function takeTokenFromFragment() {
  const m = /(?:^#|&)token=([^&]+)/.exec(location.hash);
  if (m === null) return;
  sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(m[1]));
  // Out of the address bar and the history.
  history.replaceState(null, '', location.pathname + location.search);
}

function authHeaders() {
  const t = sessionStorage.getItem(TOKEN_KEY);
  return t === null ? {} : { authorization: `Bearer ${t}` };
}

function askForToken(message) {
  $('main').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('token').focus();
}

$('login').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const t = $('token').value.trim();
  if (t.length > 0) sessionStorage.setItem(TOKEN_KEY, t);
  $('token').value = '';
  $('login').hidden = true;
  void poll();
});

// ---- drawing -------------------------------------------------------------------------------

/** A stable colour per member: its place among the sorted peer ids. */
function colours(snapshot) {
  const ids = [...new Set([...snapshot.members.map((m) => m.peerId), ...snapshot.ring.flatMap((s) => s.replicas)])].sort();
  return new Map(ids.map((id, i) => [id, PALETTE[i % PALETTE.length]]));
}

function arc(r, a0, a1) {
  const p = (a) => `${(r * Math.sin(a)).toFixed(2)} ${(-r * Math.cos(a)).toFixed(2)}`;
  return `M ${p(a0)} A ${r} ${r} 0 ${a1 - a0 > Math.PI ? 1 : 0} 1 ${p(a1)}`;
}

function drawRing(s, colour) {
  const svg = $('ring');
  svg.replaceChildren();
  const n = s.ring.length;
  if (n === 0) {
    svg.append(h('svg:text', { x: 0, y: 4, 'text-anchor': 'middle', fill: '#8aa0b6', 'font-size': 10 }, 'no shards yet'));
    return;
  }
  const gap = n > 1 ? Math.min(0.02, (Math.PI * 2) / n / 6) : 0;
  for (const sh of s.ring) {
    const a0 = (sh.shard / n) * Math.PI * 2 + gap;
    const a1 = ((sh.shard + 1) / n) * Math.PI * 2 - gap;
    const filling = sh.replicas.filter((r) => !sh.inSync.includes(r));
    const title = `shard ${sh.shard} (epoch ${sh.epoch})\nprimary ${sh.primary ?? 'none'}\nreplicas ${sh.replicas.map(short).join(', ')}` +
      (filling.length > 0 ? `\nfilling ${filling.map(short).join(', ')}` : '');
    const seg = h('svg:path', {
      d: arc(88, a0, a1), fill: 'none', 'stroke-width': 18,
      stroke: sh.primary === null ? '#3a4656' : colour.get(sh.primary),
      'data-shard': sh.shard, 'data-primary': sh.primary ?? '',
    }, h('svg:title', {}, title));
    svg.append(seg);
    // Replicas as thin inner rings; a replica being filled is dashed.
    sh.replicas.forEach((r, i) => {
      svg.append(h('svg:path', {
        d: arc(70 - i * 7, a0, a1), fill: 'none', 'stroke-width': 4, stroke: colour.get(r),
        'stroke-dasharray': sh.inSync.includes(r) ? null : '2 2', opacity: sh.inSync.includes(r) ? 0.8 : 0.6,
      }));
    });
  }
  const writable = s.shards ? `${s.shards.writableShards}/${s.shards.shardCount}` : '–';
  svg.append(h('svg:text', { x: 0, y: -4, 'text-anchor': 'middle', fill: '#dce6f0', 'font-size': 16 }, writable));
  svg.append(h('svg:text', { x: 0, y: 12, 'text-anchor': 'middle', fill: '#8aa0b6', 'font-size': 8 }, 'writable shards'));
  $('ring-note').textContent = `${n} shards, R = ${s.shards?.replicationFactor ?? '–'}`;
  $('legend').replaceChildren(...[...colour].map(([id, c]) => h('span', { title: id }, swatch(c), short(id))));
}

/** A colour square; the colour set through the DOM API (the CSP forbids inline style attributes). */
function swatch(colour) {
  const sw = h('span', { class: 'swatch' });
  sw.style.background = colour;
  return sw;
}

function sparkline(values) {
  const w = 120, hgt = 24;
  const svg = h('svg:svg', { class: 'spark', viewBox: `0 0 ${w} ${hgt}`, preserveAspectRatio: 'none' });
  const top = Math.max(12, ...values.map((v) => Math.min(v, 40)));
  const y = (v) => (hgt - 2 - (Math.min(v, top) / top) * (hgt - 4)).toFixed(1);
  // The default suspicion threshold, phi = 8.
  svg.append(h('svg:line', { x1: 0, x2: w, y1: y(8), y2: y(8), stroke: '#f5b942', 'stroke-width': 0.6, 'stroke-dasharray': '3 3', opacity: 0.6 }));
  if (values.length > 1) {
    const pts = values.map((v, i) => `${((i / (values.length - 1)) * w).toFixed(1)},${y(v)}`).join(' ');
    svg.append(h('svg:polyline', { points: pts, fill: 'none', stroke: '#4ea1ff', 'stroke-width': 1.4 }));
  }
  return svg;
}

function drawMembers(s, colour) {
  const rows = [...s.members]
    .sort((a, b) => a.peerId.localeCompare(b.peerId))
    .map((m) => {
      // The committed map's status (draining, ...) when it says more than the gossiped state.
      const status = m.mapStatus !== null && m.mapStatus !== 'active' && m.mapStatus !== m.state ? ` (${m.mapStatus})` : '';
      return h('tr', { 'data-peer': m.peerId, 'data-state': m.state },
        h('td', {}, swatch(colour.get(m.peerId) ?? '#3a4656')),
        h('td', { title: m.peerId }, h('code', {}, short(m.peerId)), m.self ? h('span', { class: 'muted' }, ' this peer') : null,
          s.raft.coordinator === m.peerId ? h('span', { class: 'muted' }, ' ★ coordinator') : null),
        h('td', {}, h('span', { class: `state state-${m.state}` }, m.state + status)),
        h('td', {}, m.self ? '–' : m.phi.toFixed(1), m.self ? null : sparkline(m.phiHistory)),
        h('td', {}, m.self ? '–' : m.lastHeartbeatAgeMs === null ? 'never' : `${duration(m.lastHeartbeatAgeMs)} ago`),
        h('td', {}, m.cpuPercent === null ? '–' : `${Math.round(m.cpuPercent)}%`),
        h('td', {}, m.capacity ?? '–'),
        h('td', {}, `${m.primaries} / ${m.replicas}`),
      );
    });
  $('members').tBodies[0].replaceChildren(...rows);
}

function drawMoves(s) {
  const box = $('moves');
  if (s.moves.length === 0) {
    box.replaceChildren(h('p', { class: 'muted' }, 'none'));
    return;
  }
  box.replaceChildren(
    ...s.moves.map((mv) => {
      let pct = null, detail;
      if (mv.bytesDone !== null && mv.bytesTotal) {
        pct = Math.min(100, (100 * mv.bytesDone) / mv.bytesTotal);
        detail = `snapshot ${bytes(mv.bytesDone)} of ${bytes(mv.bytesTotal)}` +
          (mv.rateBps ? `, ${bytes(mv.rateBps)}/s` : '') + (mv.etaMs !== null ? `, ${duration(mv.etaMs)} left` : '') +
          (mv.resumes ? `, resumed ${mv.resumes}×` : '');
      } else if (mv.seq !== null && mv.primarySeq) {
        pct = Math.min(100, (100 * mv.seq) / mv.primarySeq);
        detail = `log catch-up ${mv.seq} of ${mv.primarySeq}`;
      } else {
        detail = 'catching up';
      }
      const bar = h('div', { class: 'bar' }, h('div'));
      bar.firstChild.style.width = `${pct ?? 0}%`;
      return h('div', { class: 'move', 'data-move': mv.shard, 'data-to': mv.to },
        h('div', {}, `shard ${mv.shard}: `, h('code', { title: mv.from ?? '' }, short(mv.from)), ' → ', h('code', { title: mv.to }, short(mv.to)),
          h('span', { class: 'muted' }, mv.forMs !== null ? `  for ${duration(mv.forMs)}` : '')),
        bar,
        h('div', { class: 'muted' }, pct === null ? detail : `${pct.toFixed(0)}% · ${detail}`),
      );
    }),
  );
}

function drawRaft(s) {
  const r = s.raft;
  const rows = [
    ['This peer', r.role], ['Term', r.term], ['Coordinator', short(r.coordinator)], ['Commit index', r.commitIndex],
    ['Map version', r.clusterMapVersion], ['Voters', r.voters.map(short).join(', ') || '–'], ['Learners', r.learners.map(short).join(', ') || '–'],
  ];
  $('raft').replaceChildren(...rows.flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, String(v))]));
}

function drawTasks(s) {
  const q = s.scheduler;
  const box = $('tasks');
  if (q === null || typeof q !== 'object') {
    box.replaceChildren(h('p', { class: 'muted' }, `The coordinator (${short(s.raft.coordinator)}) holds the queue; open its dashboard to see it.`));
    $('card-tasks').textContent = '–';
    return;
  }
  $('card-tasks').textContent = `${q.queued} / ${q.running}`;
  const workers = Array.isArray(q.workers) ? q.workers : [];
  box.replaceChildren(
    h('p', {}, `${q.queued} queued, ${q.running} running on ${workers.filter((w) => w.alive).length} workers`),
    workers.length === 0 ? h('p', { class: 'muted' }, 'no workers') :
      h('table', {}, h('thead', {}, h('tr', {}, h('th', {}, 'Worker'), h('th', {}, 'Running'), h('th', {}, 'Free CPU'), h('th', {}, 'Free mem'))),
        h('tbody', {}, ...workers.map((w) => h('tr', {}, h('td', { title: w.id }, short(w.id), w.alive ? '' : ' (dead)'), h('td', {}, w.running),
          h('td', {}, `${Number(w.freeCpu).toFixed(1)} / ${w.cpu}`), h('td', {}, `${(w.freeMemMb / 1024).toFixed(1)} / ${(w.memMb / 1024).toFixed(1)} GiB`))))),
  );
}

function drawAutoscaler(s) {
  const a = s.autoscaler;
  const box = $('autoscaler');
  if (a === null || typeof a !== 'object' || a.mode === 'off') {
    box.replaceChildren(h('p', { class: 'muted' }, 'off on this peer (shoal start --autoscale)'));
    return;
  }
  const decisions = (Array.isArray(a.actions) && a.actions.length > 0 ? a.actions : Array.isArray(a.decisions) ? a.decisions : []).slice(-5).reverse();
  box.replaceChildren(
    h('p', {}, `mode ${a.mode}${a.active ? ', acting (this peer is the coordinator)' : ', standing by'}`),
    decisions.length === 0 ? h('p', { class: 'muted' }, 'no decisions yet') :
      h('ul', {}, ...decisions.map((d) => h('li', {}, `${d.action} ${d.current} → ${d.desired}: ${d.reason}`))),
  );
}

function draw(s) {
  const colour = colours(s);
  $('peer').replaceChildren('peer ', h('code', { title: s.self }, short(s.self)), ` · ${s.raft.role} · term ${s.raft.term}`);
  const alive = s.members.filter((m) => m.state === 'alive').length;
  $('card-members').textContent = `${alive} / ${s.members.length}`;
  $('card-writable').textContent = s.shards ? `${s.shards.writableShards} / ${s.shards.shardCount}` : '–';
  $('card-moves').textContent = String(s.moves.length);
  $('card-raft').textContent = `${short(s.raft.coordinator)} · term ${s.raft.term}`;
  drawRing(s, colour);
  drawMembers(s, colour);
  drawMoves(s);
  drawRaft(s);
  drawTasks(s);
  drawAutoscaler(s);
  $('updated').textContent = `Last update ${new Date(s.at).toLocaleTimeString()}.`;
}

// ---- polling -------------------------------------------------------------------------------

let timer = null;

function connection(ok, text) {
  const c = $('conn');
  c.dataset.ok = String(ok);
  c.textContent = text;
}

async function poll() {
  clearTimeout(timer);
  try {
    const res = await fetch('/v1/dashboard', { headers: authHeaders(), cache: 'no-store', signal: AbortSignal.timeout(4000) });
    if (res.status === 401) {
      const hadToken = sessionStorage.getItem(TOKEN_KEY) !== null;
      sessionStorage.removeItem(TOKEN_KEY);
      connection(false, 'token needed');
      askForToken(hadToken ? 'That token was refused.' : '');
      return; // the form's submit polls again
    }
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new Error(body.message ?? `HTTP ${res.status}`);
    }
    const snapshot = await res.json();
    $('main').hidden = false;
    draw(snapshot);
    connection(true, 'live');
  } catch (err) {
    connection(false, `no answer: ${err.message}`);
  }
  timer = setTimeout(() => void poll(), POLL_MS);
}

takeTokenFromFragment();
void poll();
