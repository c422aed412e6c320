/* brainalign results explorer: the leaderboard, the scatter and the score-by-metric table of index.html.
   Every name is set as text (textContent) or escaped for Plotly; nothing from the data becomes markup. */
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('explorer-data').textContent);
  var mods = Object.keys(data.modalities);
  var state = {modality: mods[0], metric: null, sort: 'score', desc: true, family: '', arch: '', q: ''};
  var byMetricSort = {key: null, desc: false};

  function el(tag, text, attrs) {
    var e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (attrs) Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function fmt(x, digits) {
    return (x === null || x === undefined) ? '' : Number(x).toPrecision(digits || 3);
  }
  function plotlyText(s) {  // Plotly reads a few HTML tags in text: escape them
    return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  }
  function cmp(a, b, desc) {  // missing values last, whatever the direction
    var na = (a === null || a === undefined || a === ''), nb = (b === null || b === undefined || b === '');
    if (na || nb) return na === nb ? 0 : (na ? 1 : -1);
    var r = (typeof a === 'number' && typeof b === 'number') ? a - b : String(a).localeCompare(String(b));
    return desc ? -r : r;
  }
  function M() { return data.modalities[state.modality]; }

  var COLUMNS = [
    ['rank', 'rank'], ['model', 'model'], ['family', 'family'], ['arch', 'class'], ['params', 'parameters (M)'],
    ['n_layers', 'layers'], ['benchmark', 'benchmark'], ['score', 'brain score'], ['interval', '95% interval']
  ];

  function rows() {
    var m = M(), cells = m.scores[state.metric] || [];
    var order = m.models.map(function (_, i) { return i; }).filter(function (i) { return cells[i] && cells[i][0] !== null; });
    order.sort(function (a, b) { return cells[b][0] - cells[a][0]; });
    var rank = {};
    order.forEach(function (i, k) { rank[i] = k + 1; });
    return m.models.map(function (r, i) {
      var c = cells[i] || [null, null, null, 0];
      return {i: i, model: r.model, page: r.page, family: r.family, arch: r.arch, params: r.params,
              n_layers: r.n_layers, benchmark: r.benchmark, score: c[0], low: c[1], high: c[2], n: c[3],
              rank: rank[i] === undefined ? null : rank[i]};
    });
  }

  function visible(all) {
    var q = state.q.toLowerCase();
    return all.filter(function (r) {
      return (!state.family || r.family === state.family) && (!state.arch || String(r.arch) === state.arch) &&
        (!q || r.model.toLowerCase().indexOf(q) >= 0);
    });
  }

  function renderTabs() {
    var box = document.getElementById('modality-tabs');
    box.textContent = '';
    mods.forEach(function (mod) {
      var b = el('button', mod, {id: 'tab-' + mod, type: 'button'});
      if (mod === state.modality) b.className = 'active';
      b.addEventListener('click', function () { setModality(mod); });
      box.appendChild(b);
    });
  }

  function fillSelect(id, values, keep) {
    var s = document.getElementById(id);
    s.textContent = '';
    if (keep) s.appendChild(el('option', 'all', {value: ''}));
    values.forEach(function (v) { s.appendChild(el('option', v, {value: v})); });
  }

  function setModality(mod) {
    state.modality = mod;
    state.metric = M().metric;
    state.family = '';
    state.arch = '';
    renderTabs();
    fillSelect('metric', M().metrics, false);
    document.getElementById('metric').value = state.metric;
    var fams = {}, archs = {};
    M().models.forEach(function (r) { fams[r.family] = 1; if (r.arch !== null) archs[String(r.arch)] = 1; });
    fillSelect('family', Object.keys(fams).sort(), true);
    fillSelect('arch', Object.keys(archs).sort(), true);
    render();
  }

  function renderHead() {
    var head = document.querySelector('#leaderboard thead');
    head.textContent = '';
    var tr = el('tr');
    COLUMNS.forEach(function (c) {
      var th = el('th');
      if (c[0] === 'interval') { th.textContent = c[1]; } else {
        var b = el('button', c[1], {type: 'button', 'data-key': c[0], id: 'sort-' + c[0]});
        if (state.sort === c[0]) b.setAttribute('aria-sort', state.desc ? 'descending' : 'ascending');
        b.addEventListener('click', function () {
          if (state.sort === c[0]) state.desc = !state.desc;
          else { state.sort = c[0]; state.desc = ['score', 'benchmark', 'params', 'n_layers'].indexOf(c[0]) >= 0; }
          render();
        });
        th.appendChild(b);
      }
      tr.appendChild(th);
    });
    head.appendChild(tr);
  }

  function render() {
    renderHead();
    var all = rows(), shown = visible(all);
    shown.sort(function (a, b) { return cmp(a[state.sort], b[state.sort], state.desc) || a.i - b.i; });
    var body = document.querySelector('#leaderboard tbody');
    body.textContent = '';
    shown.forEach(function (r) {
      var tr = el('tr', null, {'data-model': r.model, 'data-score': r.score === null ? '' : String(r.score)});
      tr.appendChild(el('td', r.rank));
      var td = el('td');
      td.appendChild(el('a', r.model, {href: 'models/' + encodeURIComponent(r.page), 'class': 'model-link'}));
      tr.appendChild(td);
      tr.appendChild(el('td', r.family));
      tr.appendChild(el('td', r.arch));
      tr.appendChild(el('td', fmt(r.params)));
      tr.appendChild(el('td', r.n_layers));
      tr.appendChild(el('td', fmt(r.benchmark)));
      tr.appendChild(el('td', fmt(r.score, 4), {'class': 'score'}));
      tr.appendChild(el('td', r.low === null ? (r.n ? 'n = ' + r.n : '') : '[' + fmt(r.low) + ', ' + fmt(r.high) + ']'));
      body.appendChild(tr);
    });
    document.getElementById('row-count').textContent = shown.length + ' of ' + all.length + ' models';
    renderScatter(shown);
    renderByMetric();
  }

  function renderScatter(shown) {
    var m = M(), groups = {}, left = 0;
    shown.forEach(function (r) {
      if (r.score === null || r.benchmark === null) { left += 1; return; }
      var g = r.arch === null ? 'other' : String(r.arch);
      (groups[g] = groups[g] || []).push(r);
    });
    var traces = Object.keys(groups).sort().map(function (g) {
      var rs = groups[g];
      return {
        type: 'scatter', mode: 'markers', name: plotlyText(g),
        x: rs.map(function (r) { return r.benchmark; }), y: rs.map(function (r) { return r.score; }),
        error_y: {type: 'data', symmetric: false, thickness: 1, width: 0, color: 'rgba(0,0,0,0.25)',
                  array: rs.map(function (r) { return r.high === null ? 0 : r.high - r.score; }),
                  arrayminus: rs.map(function (r) { return r.low === null ? 0 : r.score - r.low; })},
        text: rs.map(function (r) { return plotlyText(r.model); }),
        customdata: rs.map(function (r) { return r.page; }),
        hovertemplate: '%{text}<br>' + plotlyText(m.benchmark) + ' %{x:.3g}<br>brain score %{y:.4g}<extra></extra>'
      };
    });
    var layout = {margin: {t: 10, r: 10}, hovermode: 'closest',
                  xaxis: {title: {text: plotlyText(m.benchmark)}},
                  yaxis: {title: {text: plotlyText('brain score (' + state.metric + ', ' + data.pooling + ')')}}};
    document.getElementById('scatter-note').textContent = left ?
      left + ' of the ' + shown.length + ' models shown in the table have no benchmark value or score and are not plotted.' : '';
    var div = document.getElementById('scatter');
    Plotly.react(div, traces, layout, {displaylogo: false, responsive: true});
    if (!div.dataset.bound) {
      div.on('plotly_click', function (ev) {
        if (ev.points.length) window.location.href = 'models/' + encodeURIComponent(ev.points[0].customdata);
      });
      div.dataset.bound = '1';
    }
  }

  var BY_METRIC = [['metric', 'metric'], ['family', 'family'], ['n_models', 'models'], ['spearman_rho', 'Spearman rho'],
                   ['spearman_bw', 'Bonett-Wright 95%'], ['cluster', 'family-cluster 95%'], ['permutation_p', 'permutation p']];

  function renderByMetric() {
    var table = document.getElementById('by-metric');
    var head = table.querySelector('thead'), body = table.querySelector('tbody');
    head.textContent = '';
    body.textContent = '';
    var rs = data.by_metric.filter(function (r) { return r.modality === state.modality; });
    var tr = el('tr');
    BY_METRIC.forEach(function (c) {
      var th = el('th');
      if (['spearman_bw', 'cluster'].indexOf(c[0]) >= 0) { th.textContent = c[1]; } else {
        var b = el('button', c[1], {type: 'button'});
        if (byMetricSort.key === c[0]) b.setAttribute('aria-sort', byMetricSort.desc ? 'descending' : 'ascending');
        b.addEventListener('click', function () {
          byMetricSort.desc = byMetricSort.key === c[0] ? !byMetricSort.desc : c[0] === 'spearman_rho';
          byMetricSort.key = c[0];
          renderByMetric();
        });
        th.appendChild(b);
      }
      tr.appendChild(th);
    });
    head.appendChild(tr);
    if (byMetricSort.key) rs.sort(function (a, b) { return cmp(a[byMetricSort.key], b[byMetricSort.key], byMetricSort.desc); });
    rs.forEach(function (r) {
      var row = el('tr', null, {'data-metric': r.metric});
      if (r.metric === state.metric) row.className = 'selected';
      row.appendChild(el('td', r.metric));
      row.appendChild(el('td', r.family));
      row.appendChild(el('td', r.n_models));
      row.appendChild(el('td', fmt(r.spearman_rho)));
      row.appendChild(el('td', r.spearman_bw_ci_low === null || r.spearman_bw_ci_low === undefined ? '' :
        '[' + fmt(r.spearman_bw_ci_low) + ', ' + fmt(r.spearman_bw_ci_high) + ']'));
      row.appendChild(el('td', r.cluster_bootstrap_ci_low === null || r.cluster_bootstrap_ci_low === undefined ? '' :
        '[' + fmt(r.cluster_bootstrap_ci_low) + ', ' + fmt(r.cluster_bootstrap_ci_high) + ']'));
      row.appendChild(el('td', fmt(r.permutation_p, 2)));
      row.addEventListener('click', function () {
        if (M().scores[r.metric]) { state.metric = r.metric; document.getElementById('metric').value = r.metric; render(); }
      });
      body.appendChild(row);
    });
  }

  document.getElementById('metric').addEventListener('change', function (e) { state.metric = e.target.value; render(); });
  document.getElementById('family').addEventListener('change', function (e) { state.family = e.target.value; render(); });
  document.getElementById('arch').addEventListener('change', function (e) { state.arch = e.target.value; render(); });
  document.getElementById('search').addEventListener('input', function (e) { state.q = e.target.value; render(); });
  setModality(state.modality);
})();
