/* brainalign results explorer: the charts and the parcel table of a model's page. */
(function () {
  'use strict';
  var d = JSON.parse(document.getElementById('explorer-data').textContent);
  function esc(s) { return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;'); }
  function el(tag, text) { var e = document.createElement(tag); if (text !== undefined && text !== null) e.textContent = String(text); return e; }
  function fmt(x, digits) { return (x === null || x === undefined) ? '' : Number(x).toPrecision(digits || 3); }
  var config = {displaylogo: false, responsive: true};
  var parcels = d.parcels.map(esc);

  Plotly.newPlot('heatmap', [{
    type: 'heatmap', z: d.matrix, x: parcels, y: d.layers, colorscale: 'Viridis',
    colorbar: {title: {text: esc(d.metric)}},
    hovertemplate: 'layer %{y}<br>parcel %{x}<br>score %{z:.4g}<extra></extra>'
  }], {margin: {t: 10}, xaxis: {type: 'category', title: {text: 'parcel'}},
       yaxis: {title: {text: 'layer'}, autorange: 'reversed'}}, config);

  var nets = Object.keys(d.network_profiles);
  Plotly.newPlot('networks', nets.map(function (n) {
    return {type: 'scatter', mode: 'lines+markers', name: esc(n), x: d.layers, y: d.network_profiles[n],
            hovertemplate: esc(n) + '<br>layer %{x}<br>mean score %{y:.4g}<extra></extra>'};
  }), {margin: {t: 10}, xaxis: {title: {text: 'layer'}},
       yaxis: {title: {text: esc(d.metric + ', mean over the network\'s parcels')}}}, config);

  var cols = [['parcel', 'parcel'], ['network', 'network'], ['best_layer', 'best layer'], ['score', 'score']];
  if (d.has_ceilings) cols.push(['ceiling', 'split-half ceiling'], ['normalised', 'score / ceiling']);
  if (d.has_nulls) cols.push(['significant', 'subjects significant'], ['min_p_perm', 'min permutation p']);
  var head = document.querySelector('#parcels thead'), body = document.querySelector('#parcels tbody');
  var tr = el('tr');
  cols.forEach(function (c) { tr.appendChild(el('th', c[1])); });
  head.appendChild(tr);
  d.parcel_rows.forEach(function (r) {
    var row = el('tr');
    cols.forEach(function (c) {
      var v = r[c[0]];
      row.appendChild(el('td', typeof v === 'number' && c[0] !== 'best_layer' ? fmt(v, 4) : v));
    });
    body.appendChild(row);
  });
})();
