// The ablate dashboard page (inlined by ablate/dashboard/page.py). Each study is a JSON blob,
// parsed and turned into DOM only when the study is shown; plots draw when they come on screen.
// Text from the database is only ever set as textContent, never as HTML.
(function () {
  'use strict';
  var conf = JSON.parse(document.getElementById('ablate-conf').textContent);
  var picker = document.getElementById('study-picker');
  var bandsBox = document.getElementById('bands');
  var metricSel = document.getElementById('curve-metric');
  var PLOT = {responsive: true, displaylogo: false, displayModeBar: false};  // one toolbar: the page's
  var PAGE_ROWS = 25, TABLE_ROWS = 50;
  var blobs = {}, state = {}, plotted = {}, pending = {}, current = null;

  function blob(sid) {
    if (!(sid in blobs)) {
      var el = document.getElementById('study-' + sid);
      blobs[sid] = el ? JSON.parse(el.textContent) : null;
    }
    return blobs[sid];
  }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(v) { return (v === null || v === undefined) ? '–' : (typeof v === 'number' ? String(+v.toPrecision(6)) : String(v)); }
  function api(path) {
    return fetch(path, {cache: 'no-store'}).then(function (r) {
      if (!r.ok) { throw new Error(path + ': HTTP ' + r.status); }
      return r.json();
    });
  }

  // -- plots -----------------------------------------------------------------------------------
  function slots(b) {
    var keys = Object.keys(b.figs), out = [];
    function add(key, alts, wide) { out.push({key: key, alts: alts || [key], wide: !!wide}); }
    if (b.figs.arms) { add('arms'); }
    if (b.figs.grid) { add('grid'); }
    keys.filter(function (k) { return k.indexOf('axis:') === 0; }).forEach(function (k) { add(k); });
    if (keys.some(function (k) { return k.indexOf('curves:') === 0; })) { add('curves'); }
    ['kernel', 'params', 'flops', 'erf'].forEach(function (k) { if (b.figs[k]) { add(k); } });
    ['erf_maps', 'kernel_maps', 'shape_bias'].forEach(function (k) {  // the appendix analyses: full width
      if (b.figs[k]) { add(k, keys.filter(function (a) { return a === k || a.indexOf(k + ':') === 0; }), true); }
    });
    return out;
  }
  function figureFor(sid, key) {
    var b = blob(sid), st = state[sid];
    if (key === 'curves') {
      return st.curveFig || b.figs['curves:' + (metricSel.value || b.metric)] || b.figs['curves:' + b.metric]
        || b.figs[Object.keys(b.figs).filter(function (k) { return k.indexOf('curves:') === 0; })[0]];
    }
    return b.figs[st.alt[key] || key];
  }
  function withBands(fig) {
    (fig.data || []).forEach(function (t) { if (t.meta === 'band') { t.visible = bandsBox.checked; } });
    return fig;
  }
  function plot(div) {
    if (!plotted[div.id]) {
      if (pending[div.id] && observer) { observer.unobserve(div); }
      delete pending[div.id];
      var fig = withBands(figureFor(div.dataset.study, div.dataset.key));
      plotted[div.id] = Plotly.newPlot(div, fig.data, fig.layout, PLOT).then(function () {
        div.on('plotly_click', function (ev) {
          var p = ev && ev.points && ev.points[0];
          var cd = p && p.customdata;
          var arm = Array.isArray(cd) ? cd[0] : null;
          if (typeof arm === 'number') { pickArm(div.dataset.study, arm); }
        });
        return div;
      });
    }
    return plotted[div.id];
  }
  function redraw(div) {
    if (!plotted[div.id]) { return Promise.resolve(); }
    var fig = withBands(figureFor(div.dataset.study, div.dataset.key));
    return Plotly.react(div, fig.data, fig.layout, PLOT);
  }
  var observer = ('IntersectionObserver' in window) ? new IntersectionObserver(function (entries) {
    entries.forEach(function (e) { if (e.isIntersecting && pending[e.target.id]) { plot(e.target); } });
  }, {rootMargin: '300px'}) : null;
  function divs(sid) {
    var sec = document.querySelector('section.study[data-study="' + sid + '"]');
    return sec ? Array.prototype.slice.call(sec.querySelectorAll('div.plot')) : [];
  }
  function draw(sid) {  // the plots on screen (or nearly) now, the others when scrolled to
    var jobs = [], reach = window.innerHeight + 300;
    divs(sid).forEach(function (d) {
      var r = d.getBoundingClientRect();
      if (!observer || (r.top < reach && r.bottom > -300)) { jobs.push(plot(d)); }
      else if (!plotted[d.id]) { pending[d.id] = true; observer.observe(d); }
    });
    return Promise.all(jobs).then(function () { return jobs.length; });
  }
  function drawAll(sid) {
    var all = divs(sid).map(plot);
    return Promise.all(all).then(function () { return all.length; });
  }

  // -- arms: clicking a point filters the trials to that arm (and, served, adds its curve) -------
  function pickArm(sid, arm) {
    var st = state[sid], b = blob(sid);
    st.armFilter = arm;
    st.page = 0;
    renderTrials(sid);
    var done = Promise.resolve();
    if (conf.served) {
      if (st.curveArms.indexOf(arm) < 0) { st.curveArms = st.curveArms.concat([arm]).slice(-12); }
      done = loadCurves(sid);
    }
    var info = document.querySelector('section.study[data-study="' + sid + '"] .arm-note');
    if (info) { info.textContent = 'trials of arm ' + b.arms[arm] + ' below' + (conf.served ? '; its curve added' : ''); }
    return done;
  }
  function loadCurves(sid) {
    var st = state[sid], b = blob(sid);
    var q = 'api/curves?study=' + encodeURIComponent(b.name) + '&metric=' + encodeURIComponent(metricSel.value || b.metric)
      + '&arms=' + st.curveArms.join(',');
    return api(q).then(function (r) {
      if (r.figure) {
        st.curveFig = r.figure;
        var d = document.getElementById('plot-' + sid + '-curves');
        if (d) { return plotted[d.id] ? redraw(d) : plot(d); }
      }
    }).catch(function (e) { console.warn(String(e)); });
  }

  // -- the study's table -----------------------------------------------------------------------
  function renderTable(sid, card, t, key) {  // the study's table (key 'main') or an analysis' (Table 10, ...)
    var st = state[sid];
    st.tablePage[key] = st.tablePage[key] || 0;
    card.textContent = '';
    var bold = {};
    t.bold.forEach(function (p) { bold[p[0] + ',' + p[1]] = true; });
    var tab = el('table', 'ablate-table');
    tab.appendChild(el('caption', null, t.title));
    var thead = el('thead');
    if (t.groups.some(function (g) { return g; })) {
      var gr = el('tr'), i = 0;
      while (i < t.groups.length) {
        var j = i;
        while (j + 1 < t.groups.length && t.groups[j + 1] === t.groups[i] && t.groups[i]) { j++; }
        var th = el('th', t.groups[i] ? 'group' : null, t.groups[i]);
        th.colSpan = j - i + 1;
        gr.appendChild(th);
        i = j + 1;
      }
      thead.appendChild(gr);
    }
    var hr = el('tr');
    t.headers.forEach(function (h) { hr.appendChild(el('th', null, h)); });
    thead.appendChild(hr);
    tab.appendChild(thead);
    var body = el('tbody'), start = st.tablePage[key] * TABLE_ROWS;
    t.rows.slice(start, start + TABLE_ROWS).forEach(function (r, k) {
      var tr = el('tr');
      r.forEach(function (c, j) {
        var td = el('td');
        if (bold[(start + k) + ',' + j]) { td.appendChild(el('b', null, c)); } else { td.textContent = c; }
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    tab.appendChild(body);
    card.appendChild(tab);
    if (t.rows.length > TABLE_ROWS) {
      card.appendChild(pager(st.tablePage[key], t.rows.length, TABLE_ROWS, 'rows', function (p) { st.tablePage[key] = p; renderTable(sid, card, t, key); }));
    }
    if (t.notes.length) {
      var ol = el('ol', 'ablate-notes');
      t.notes.forEach(function (n) { ol.appendChild(el('li', null, n)); });
      card.appendChild(ol);
    }
  }
  function pager(page, n, per, what, go) {
    var box = el('div', 'pager'), pages = Math.max(1, Math.ceil(n / per));
    var prev = el('button', null, '‹ prev'), next = el('button', null, 'next ›');
    prev.disabled = page <= 0;
    next.disabled = page >= pages - 1;
    prev.onclick = function () { go(page - 1); };
    next.onclick = function () { go(page + 1); };
    box.appendChild(prev);
    box.appendChild(el('span', null, (n ? (page * per + 1) + '–' + Math.min(n, (page + 1) * per) : '0') + ' of ' + n + ' ' + what));
    box.appendChild(next);
    return box;
  }

  // -- the trials ------------------------------------------------------------------------------
  function matches(sid) {
    var b = blob(sid), t = b.trials, st = state[sid], q = st.query.trim().toLowerCase(), out = [];
    for (var i = 0; i < t.id.length; i++) {
      if (st.armFilter !== null && t.arm[i] !== st.armFilter) { continue; }
      if (st.status !== '' && t.status[i] !== +st.status) { continue; }
      if (q && t.id[i].indexOf(q) !== 0 && b.arms[t.arm[i]].toLowerCase().indexOf(q) < 0) { continue; }
      out.push(i);
    }
    if (st.sort) {
      var sign = st.sort, v = t.value;
      out.sort(function (a, c) {
        if (v[a] === null) { return v[c] === null ? 0 : 1; }
        if (v[c] === null) { return -1; }
        return sign * (v[a] - v[c]);
      });
    }
    return out;
  }
  function renderTrials(sid) {
    var b = blob(sid), t = b.trials, st = state[sid], box = st.trialsBox;
    var rows = matches(sid), start = st.page * PAGE_ROWS;
    box.textContent = '';
    if (st.armFilter !== null) {
      var f = el('div', 'pager');
      f.appendChild(el('span', null, 'arm: ' + b.arms[st.armFilter]));
      var clear = el('button', null, 'all arms');
      clear.onclick = function () { st.armFilter = null; st.page = 0; renderTrials(sid); };
      f.appendChild(clear);
      box.appendChild(f);
    }
    var tab = el('table', 'trials'), head = el('tr');
    ['trial', 'arm', 'seed', 'status', b.metricLabel + (st.sort > 0 ? ' ▲' : st.sort < 0 ? ' ▼' : ' ⇅')].forEach(function (h, j) {
      var th = el('th', j >= 2 && j !== 3 ? 'num' : null, h);
      if (j === 4) { th.onclick = function () { st.sort = st.sort === 0 ? (b.mode === 'min' ? 1 : -1) : -st.sort; st.page = 0; renderTrials(sid); }; }
      head.appendChild(th);
    });
    var thead = el('thead');
    thead.appendChild(head);
    tab.appendChild(thead);
    var body = el('tbody');
    rows.slice(start, start + PAGE_ROWS).forEach(function (i) {
      var tr = el('tr', st.selected === i ? 'sel' : null);
      var code = el('code', null, t.id[i]);
      var td0 = el('td');
      td0.appendChild(code);
      tr.appendChild(td0);
      tr.appendChild(el('td', null, b.arms[t.arm[i]]));
      tr.appendChild(el('td', 'num', t.seed[i]));
      var s = t.statuses[t.status[i]], td = el('td');
      var dot = el('i', 'dot');
      dot.style.background = conf.statusColors[s] || '#999';
      td.appendChild(dot);
      td.appendChild(document.createTextNode(s));
      tr.appendChild(td);
      tr.appendChild(el('td', 'num', fmt(t.value[i])));
      tr.onclick = function () { st.selected = i; renderTrials(sid); showDetail(sid, i); };
      body.appendChild(tr);
    });
    tab.appendChild(body);
    box.appendChild(tab);
    box.appendChild(pager(st.page, rows.length, PAGE_ROWS, 'trials', function (p) { st.page = p; renderTrials(sid); }));
  }
  function kvTable(obj) {
    var tab = el('table');
    Object.keys(obj || {}).forEach(function (k) {
      var tr = el('tr'), v = obj[k];
      tr.appendChild(el('th', null, k));
      tr.appendChild(el('td', null, (v !== null && typeof v === 'object') ? JSON.stringify(v) : fmt(v)));
      tab.appendChild(tr);
    });
    return tab;
  }
  function renderDetail(panel, d) {
    if (d.error) {
      panel.appendChild(el('h4', null, 'Error' + (d.error_kind ? ' (' + d.error_kind + ')' : '')));
      panel.appendChild(el('pre', 'error', d.error));
    }
    if (d.stale && d.stale.length) { panel.appendChild(el('p', 'muted', 'Made by other code: ' + d.stale.join('; '))); }
    panel.appendChild(el('h4', null, 'Metrics per epoch'));
    var epochs = d.epochs || [];
    if (epochs.length) {
      var names = [];
      epochs.forEach(function (e) { Object.keys(e).forEach(function (k) { if (k !== 'epoch' && names.indexOf(k) < 0) { names.push(k); } }); });
      var tab = el('table'), hr = el('tr');
      ['epoch'].concat(names).forEach(function (n) { hr.appendChild(el('th', null, n)); });
      tab.appendChild(hr);
      epochs.forEach(function (e) {
        var tr = el('tr');
        tr.appendChild(el('td', 'num', e.epoch));
        names.forEach(function (n) { tr.appendChild(el('td', 'num', fmt(e[n]))); });
        tab.appendChild(tr);
      });
      panel.appendChild(tab);
    } else { panel.appendChild(el('p', 'muted', 'none recorded')); }
    panel.appendChild(el('h4', null, 'Config'));
    panel.appendChild(el('pre', null, JSON.stringify(d.config, null, 2)));
    panel.appendChild(el('h4', null, 'Provenance'));
    panel.appendChild(d.provenance && Object.keys(d.provenance).length ? kvTable(d.provenance) : el('p', 'muted', 'none recorded'));
    var extra = {attempts: d.attempts, started_at: d.started_at, ended_at: d.ended_at, params: d.n_params, flops: d.flops};
    panel.appendChild(el('h4', null, 'Run'));
    panel.appendChild(kvTable(extra));
    if (d.past_attempts && d.past_attempts.length) {
      panel.appendChild(el('p', 'muted', d.past_attempts.length + ' earlier attempt(s): `ablate show ' + d.trial_id + '`'));
    }
  }
  function showDetail(sid, i) {
    var b = blob(sid), t = b.trials, panel = state[sid].detailBox, id = t.id[i];
    panel.textContent = '';
    panel.hidden = false;
    var h = el('h3', null, 'Trial ' + id);
    panel.appendChild(h);
    panel.appendChild(el('p', null, 'arm ' + b.arms[t.arm[i]] + ' · seed ' + t.seed[i] + ' · ' + t.statuses[t.status[i]]
      + ' · ' + b.metricLabel + ' ' + fmt(t.value[i])));
    var d = b.details[id];
    if (d) { renderDetail(panel, d); return Promise.resolve(d); }
    if (conf.served) {
      var wait = el('p', 'muted', 'loading…');
      panel.appendChild(wait);
      return api('api/trial?study=' + encodeURIComponent(b.name) + '&id=' + encodeURIComponent(id)).then(function (d) {
        panel.removeChild(wait);
        renderDetail(panel, d);
        return d;
      }).catch(function (e) { wait.textContent = String(e); });
    }
    panel.appendChild(el('p', 'muted', 'This page embeds the full config, provenance, epochs and error of a sample of '
      + 'trials only. `ablate show ' + id + '` prints them, and `ablate dashboard --serve` shows any trial here.'));
    return Promise.resolve(null);
  }

  // -- a study's section -----------------------------------------------------------------------
  function build(sid) {
    var sec = document.querySelector('section.study[data-study="' + sid + '"]');
    if (!sec || state[sid]) { return; }
    var b = blob(sid);
    state[sid] = {alt: {}, curveArms: b.curveArms.slice(), curveFig: null, armFilter: null, status: '', query: '',
                  sort: 0, page: 0, tablePage: {}, selected: null};
    sec.appendChild(el('h2', null, b.name));
    if (b.description) { sec.appendChild(el('p', 'desc', b.description)); }
    var status = el('div', 'status'), total = 0;
    Object.keys(b.counts).forEach(function (s) { total += b.counts[s]; });
    status.appendChild(document.createTextNode(total + ' trials: '));
    Object.keys(b.counts).forEach(function (s) {
      if (!b.counts[s] && s === 'interrupted') { return; }
      var sp = el('span'), dot = el('i', 'dot');
      dot.style.background = conf.statusColors[s] || '#999';
      sp.appendChild(dot);
      sp.appendChild(document.createTextNode(b.counts[s] + ' ' + s));
      status.appendChild(sp);
    });
    sec.appendChild(status);
    var grid = el('div', 'grid'), list = slots(b);
    list.forEach(function (s) {
      var wrap = el('div', 'plot-wrap' + (s.wide ? ' wide' : ''));
      if (s.alts.length > 1) {
        var tools = el('div', 'plot-tools', 'arm '), sel = el('select', 'fig-pick');
        s.alts.forEach(function (a) { var o = el('option', null, b.figs[a]._label || a); o.value = a; sel.appendChild(o); });
        sel.onchange = function () { state[sid].alt[s.key] = sel.value; redraw(div); };
        tools.appendChild(sel);
        wrap.appendChild(tools);
      }
      var div = el('div', 'plot');
      div.id = 'plot-' + sid + '-' + s.key.replace(/[^A-Za-z0-9_.-]/g, '_');
      div.dataset.study = sid;
      div.dataset.key = s.key;
      wrap.appendChild(div);
      grid.appendChild(wrap);
    });
    if (!list.length) { grid.appendChild(el('p', 'muted', 'No metrics recorded yet: plots appear after the first epoch.')); }
    sec.appendChild(grid);
    sec.appendChild(el('p', 'muted arm-note', 'Click a point of an arm to list its trials' + (conf.served ? ' and add its curve.' : '.')));
    var tcard = el('div', 'card table-card');
    sec.appendChild(tcard);
    renderTable(sid, tcard, b.table, 'main');
    (b.analysisTables || []).forEach(function (t, i) {
      var acard = el('div', 'card table-card analysis-table');
      acard.dataset.key = t.key || String(i);
      sec.appendChild(acard);
      renderTable(sid, acard, t, 'analysis:' + i);
    });
    var card = el('div', 'card trials-card');
    card.appendChild(el('h3', null, 'Trials'));
    var tools2 = el('div', 'pager'), search = el('input');
    search.type = 'search';
    search.placeholder = 'trial id prefix or arm text';
    search.oninput = function () { state[sid].query = search.value; state[sid].page = 0; renderTrials(sid); };
    var ss = el('select'), all = el('option', null, 'any status');
    all.value = '';
    ss.appendChild(all);
    b.trials.statuses.forEach(function (s, i) { var o = el('option', null, s); o.value = String(i); ss.appendChild(o); });
    ss.onchange = function () { state[sid].status = ss.value; state[sid].page = 0; renderTrials(sid); };
    tools2.appendChild(search);
    tools2.appendChild(ss);
    card.appendChild(tools2);
    state[sid].trialsBox = el('div');
    card.appendChild(state[sid].trialsBox);
    state[sid].detailBox = el('div', 'detail');
    state[sid].detailBox.hidden = true;
    card.appendChild(state[sid].detailBox);
    sec.appendChild(card);
    renderTrials(sid);
  }
  function fillMetrics(sid) {
    var b = blob(sid), keep = metricSel.value;
    metricSel.textContent = '';
    Object.keys(b.figs).filter(function (k) { return k.indexOf('curves:') === 0; }).forEach(function (k) {
      var o = el('option', null, k.slice(7));
      o.value = k.slice(7);
      metricSel.appendChild(o);
    });
    metricSel.disabled = !metricSel.options.length;
    var names = Array.prototype.map.call(metricSel.options, function (o) { return o.value; });
    metricSel.value = names.indexOf(keep) >= 0 ? keep : (names.indexOf(b.metric) >= 0 ? b.metric : (names[0] || ''));
  }
  function show(sid) {
    document.querySelectorAll('section.study').forEach(function (s) { s.hidden = s.dataset.study !== sid; });
    if (!sid) { return Promise.resolve(0); }
    if (picker && picker.value !== sid) { picker.value = sid; }
    if (location.hash !== '#' + encodeURIComponent(sid)) { history.replaceState(null, '', '#' + encodeURIComponent(sid)); }
    build(sid);
    fillMetrics(sid);
    current = sid;
    return draw(sid);
  }

  // -- the toolbar -------------------------------------------------------------------------------
  function drawn() { return current ? divs(current).filter(function (d) { return plotted[d.id]; }) : []; }
  bandsBox.addEventListener('change', function () {
    drawn().forEach(function (d) {
      var idx = [];
      (d.data || []).forEach(function (t, i) { if (t.meta === 'band') { idx.push(i); } });
      if (idx.length) { Plotly.restyle(d, {visible: bandsBox.checked}, idx); }
    });
  });
  metricSel.addEventListener('change', function () {
    if (!current) { return; }
    if (conf.served && state[current].curveFig) { loadCurves(current); return; }
    var d = document.getElementById('plot-' + current + '-curves');
    if (d) { redraw(d); }
  });
  document.getElementById('reset-zoom').addEventListener('click', function () {
    drawn().forEach(function (d) { Plotly.relayout(d, {'xaxis.autorange': true, 'yaxis.autorange': true}); });
  });
  document.getElementById('save-png').addEventListener('click', function () {
    drawn().forEach(function (d) {
      Plotly.downloadImage(d, {format: 'png', filename: (conf.names[current] || current) + '-' + d.dataset.key.replace(/[^A-Za-z0-9_.-]/g, '_')});
    });
  });
  window.addEventListener('beforeprint', function () { if (current) { drawAll(current); } });

  // -- start -------------------------------------------------------------------------------------
  performance.mark('ablate:dom-parsed');
  var jobs = [];
  var names = picker ? Array.prototype.map.call(picker.options, function (o) { return o.value; }) : [];
  var wanted = decodeURIComponent(location.hash.slice(1));
  jobs.push(show(names.indexOf(wanted) >= 0 ? wanted : (names[0] || null)));
  if (picker) { picker.addEventListener('change', function () { show(picker.value); }); }
  document.querySelectorAll('#overview tr').forEach(function (tr) {
    tr.addEventListener('click', function () { show(tr.dataset.study); });
  });
  window.ablateShow = show;
  window.ablateDrawAll = function () { return current ? drawAll(current) : Promise.resolve(0); };
  window.ablateDetail = function (i) { return showDetail(current, i); };
  window.ablatePickArm = function (arm) { return pickArm(current, arm); };
  window.ablateReady = Promise.all(jobs).then(function () {
    performance.mark('ablate:drawn');
    window.ablateDrawnAt = performance.now();
    document.body.dataset.ready = '1';
    return window.ablateDrawnAt;
  });
  if (conf.served && conf.refresh > 0) {  // reload only when the results changed
    setInterval(function () {
      api('api/version').then(function (v) { if (v.version !== conf.version) { location.reload(); } })
        .catch(function () {});
    }, conf.refresh * 1000);
  }
})();
