// Live updates for the Cloud Builder pages. The pages are complete without
// this script; it only keeps them current: matrix cells and the target
// page from server-sent events, the build log from the runner's followed
// log, the runners table by polling. No framework, no build step.
'use strict';
(function () {
  const $ = (s, r) => (r || document).querySelector(s);
  const conn = $('#conn');
  // history records every state change applied, oldest first, for people
  // debugging a page (and for the browser tests).
  const live = window.cbLive = { history: [] };

  function setConn(text, cls) {
    if (conn) { conn.textContent = text; conn.className = 'conn ' + cls; }
  }
  function short(ms) {
    const s = Math.floor(ms / 1000);
    if (s < 60) return s + 's';
    if (s < 3600) return Math.floor(s / 60) + 'm' + String(s % 60).padStart(2, '0') + 's';
    if (s < 172800) return Math.floor(s / 3600) + 'h' + String(Math.floor(s / 60) % 60).padStart(2, '0') + 'm';
    return Math.floor(s / 86400) + 'd';
  }
  const ms = t => (t ? Date.parse(t) || 0 : 0);
  const isFinal = st => !['queued', 'building', 'blocked'].includes(st);
  function span(cls, text) { const e = document.createElement('span'); e.className = cls; e.textContent = text; return e; }
  function targetURL(key) { return '/ui/targets/' + key.split('/').map(encodeURIComponent).join('/'); }

  // Ages and running durations tick every second.
  function tick() {
    const now = Date.now();
    document.querySelectorAll('[data-since]').forEach(el => {
      const since = +el.dataset.since;
      if (!since) return;
      const age = el.classList.contains('age') ? el : $('.age', el);
      if (age) age.textContent = short(now - since) + ' ago';
      const started = +el.dataset.started, finished = +el.dataset.finished;
      const dur = $('.dur', el);
      if (dur && started) {
        if (el.dataset.state === 'building') dur.textContent = short(now - started);
        else if (finished >= started) dur.textContent = short(finished - started);
      }
    });
  }
  setInterval(tick, 1000);

  // connect follows /ui/events. EventSource reconnects by itself and sends
  // Last-Event-ID, so no change is lost across a reconnect.
  function connect(url, onCell) {
    const es = new EventSource(url);
    es.addEventListener('hello', () => setConn('live', 'ok'));
    es.addEventListener('cell', ev => {
      const c = JSON.parse(ev.data);
      live.history.push([c.key, c.state]);
      onCell(c);
    });
    es.onerror = () => setConn('connection lost, reconnecting…', 'lost');
    return es;
  }

  // --- overview matrix ---
  const table = $('#matrix');
  if (table) {
    const f = table.dataset;
    const keep = c => {
      if (f.fState && c.state !== f.fState) return false;
      if (f.fGroup && c.runner_group !== f.fGroup) return false;
      if (f.fProject && !c.project.includes(f.fProject)) return false;
      if (f.fQ) {
        const q = f.fQ.toLowerCase();
        if (![c.project, c.profile, c.reason || ''].some(s => s.toLowerCase().includes(q))) return false;
      }
      return true;
    };
    const head = $('thead tr', table), body = $('tbody', table);
    function column(profile) {
      const ths = Array.from(head.querySelectorAll('th[data-col]'));
      let i = ths.findIndex(th => th.dataset.col === profile);
      if (i >= 0) return i;
      i = ths.findIndex(th => th.dataset.col > profile);
      if (i < 0) i = ths.length;
      const th = document.createElement('th'); th.dataset.col = profile; th.textContent = profile;
      head.insertBefore(th, head.children[i + 1] || null);
      body.querySelectorAll('tr').forEach(tr => {
        const td = document.createElement('td'); td.className = 'cell none'; td.dataset.col = profile;
        tr.insertBefore(td, tr.children[i + 1] || null);
      });
      return i;
    }
    function row(project) {
      const rows = Array.from(body.querySelectorAll('tr[data-project]'));
      let tr = rows.find(r => r.dataset.project === project);
      if (tr) return tr;
      tr = document.createElement('tr'); tr.dataset.project = project;
      const th = document.createElement('th'); th.className = 'name';
      const a = document.createElement('a'); a.href = '/ui/?project=' + encodeURIComponent(project); a.textContent = project;
      th.append(a); tr.append(th);
      head.querySelectorAll('th[data-col]').forEach(h => {
        const td = document.createElement('td'); td.className = 'cell none'; td.dataset.col = h.dataset.col; tr.append(td);
      });
      body.insertBefore(tr, rows.find(r => r.dataset.project > project) || null);
      const empty = $('.empty'); if (empty) empty.remove();
      return tr;
    }
    function fill(td, c) {
      td.className = 'cell st-' + c.state;
      Object.assign(td.dataset, { key: c.key, state: c.state, since: ms(c.since), started: ms(c.started), finished: ms(c.finished) });
      const a = document.createElement('a'); a.href = targetURL(c.key);
      a.append(span('state', c.state), ' ', span('age', ''), ' ', span('dur', ''));
      if (c.reason) { const r = span('reason', c.reason); r.title = c.reason; a.append(r); }
      td.replaceChildren(a);
    }
    connect('/ui/events?since=' + f.seq, c => {
      let td = table.querySelector('td[data-key="' + CSS.escape(c.key) + '"]');
      if (!td) {
        if (!keep(c)) return;
        // New targets are shown on the first page; others find them by paging.
        if (+f.page !== 1 && !body.querySelector('tr[data-project="' + CSS.escape(c.project) + '"]')) return;
        const i = column(c.profile);
        td = row(c.project).children[i + 1];
      }
      fill(td, c);
      tick();
      recount();
    });
    // On a single page the counts cover what is shown: keep them current.
    function recount() {
      if (+f.pages !== 1) return;
      const counts = {};
      const cells = table.querySelectorAll('td[data-key]');
      cells.forEach(td => { counts[td.dataset.state] = (counts[td.dataset.state] || 0) + 1; });
      const p = $('#counts');
      p.replaceChildren(span('', String(cells.length)), ' targets of ', span('', String(body.querySelectorAll('tr').length)), ' packages and images');
      p.firstChild.id = 'total';
      ['queued', 'blocked', 'building', 'succeeded', 'failed', 'unresolvable', 'rejected'].forEach(st => {
        if (counts[st]) p.append(' · ', span('badge st-' + st, st + ' ' + counts[st]));
      });
    }
  }

  // --- target page ---
  const box = $('#live');
  if (box) {
    const key = box.dataset.key;
    const logSec = $('#log'), pre = $('#logtext'), logState = $('#logstate'), follow = $('#follow');
    const log = {
      gen: 0, streaming: false,
      set(t, cls) { logState.textContent = t; logState.className = 'logstate ' + (cls || ''); },
      start() { this.gen++; this.loop(this.gen, 0); },
      append(text) {
        pre.append(text);
        if (follow.checked) pre.scrollTop = pre.scrollHeight;
      },
      async loop(my, attempt) {
        try {
          this.set(attempt ? 'connection lost, reconnecting…' : 'connecting…', attempt ? 'lost' : '');
          const resp = await fetch(logSec.dataset.src + '?follow=1', { cache: 'no-store' });
          if (my !== this.gen) return;
          if (resp.status === 404) { this.set('no log yet; waiting for the build', ''); return; }
          if (!resp.ok) throw new Error(resp.status + ' ' + (await resp.text()));
          pre.textContent = '';
          this.streaming = true;
          this.set('running', 'running');
          const reader = resp.body.getReader(), dec = new TextDecoder();
          for (;;) {
            const { done, value } = await reader.read();
            if (my !== this.gen) { reader.cancel(); return; }
            if (done) break;
            this.append(dec.decode(value, { stream: true }));
          }
          this.streaming = false;
          this.set('finished', 'finished');
        } catch (e) {
          this.streaming = false;
          if (my !== this.gen) return;
          this.set('connection lost, reconnecting… (' + e.message + ')', 'lost');
          setTimeout(() => { if (my === this.gen) this.loop(my, attempt + 1); }, Math.min(1000 * 2 ** attempt, 10000));
        }
      },
    };
    if (logSec) log.start();

    let busy = false, again = false;
    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const r = await fetch(location.pathname + '?fragment=live', { cache: 'no-store' });
        if (r.ok) box.innerHTML = await r.text();
      } catch (e) { /* the event stream shows the connection state */ }
      busy = false;
      if (again) { again = false; refresh(); }
    }
    connect('/ui/events?target=' + encodeURIComponent(key) + '&since=' + box.dataset.seq, c => {
      const newRequest = c.request_id !== box.dataset.request;
      const wasFinal = box.dataset.final === 'true';
      Object.assign(box.dataset, { request: c.request_id, state: c.state, final: isFinal(c.state) });
      refresh();
      if (!logSec) return;
      if (c.state === 'building' && (newRequest || wasFinal || !log.streaming)) log.start();
      if (isFinal(c.state) && log.streaming) {
        // The runner ends a followed log when the build ends; if this one
        // does not, fetch it again so the end is never missing.
        const my = log.gen;
        setTimeout(() => { if (my === log.gen && log.streaming) log.start(); }, 8000);
      }
    });

    const prep = $('#prepare');
    if (prep) prep.addEventListener('toggle', async () => {
      if (!prep.open) return;
      const p = $('pre', prep);
      try {
        const r = await fetch(prep.dataset.src, { cache: 'no-store' });
        p.textContent = r.ok ? await r.text() : 'not available: ' + r.status + ' ' + (await r.text());
      } catch (e) { p.textContent = 'not available: ' + e.message; }
    });

    const form = $('#rebuild');
    if (form) form.addEventListener('submit', async ev => {
      ev.preventDefault();
      const msg = $('#rebuildmsg'), input = $('#token');
      const token = input.value || sessionStorage.getItem('cbToken') || '';
      const headers = { 'Content-Type': 'application/json' };
      if (token) headers.Authorization = 'Bearer ' + token;
      msg.textContent = 'sending…';
      try {
        const r = await fetch('/api/v1/rebuild', { method: 'POST', headers, body: JSON.stringify({ target: form.dataset.target }) });
        const j = await r.json();
        if (r.ok) { msg.textContent = 'requested: ' + j.request_id; if (input.value) sessionStorage.setItem('cbToken', input.value); input.value = ''; }
        else msg.textContent = j.error || r.statusText;
      } catch (e) { msg.textContent = 'failed: ' + e.message; }
    });
  }

  // --- runners: poll, heartbeats arrive every few seconds anyway ---
  const runners = $('#runners');
  if (runners) {
    setConn('refreshing every 5s', 'ok');
    setInterval(async () => {
      try {
        const r = await fetch(location.pathname, { cache: 'no-store' });
        const doc = new DOMParser().parseFromString(await r.text(), 'text/html');
        const nb = $('#runners tbody', doc);
        if (nb) { $('tbody', runners).replaceWith(nb); setConn('refreshing every 5s', 'ok'); }
      } catch (e) { setConn('connection lost, retrying…', 'lost'); }
    }, 5000);
  }
})();
