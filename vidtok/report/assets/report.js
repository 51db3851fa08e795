// The vidtok report page: reads window.VIDTOK_REPORT (data/report-data.js) and draws the classify and embed views.
// Plain DOM + one canvas, no libraries, no network. Large reports stay responsive: the card grid is paged (only the
// shown page's cards and pictures exist), the map is one canvas, and hover looks up the nearest point directly.
(function () {
  "use strict";
  var D = window.VIDTOK_REPORT;
  var PAGE_SIZE = 48;
  var ERROR_ROWS = 200;
  var api = {};
  window.vidtokReport = api;

  function $(id) { return document.getElementById(id); }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }
  function pct(p) { return Math.round(100 * p) + "%"; }
  function secs(s) { return s == null ? "?" : s.toFixed(2); }
  var PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf"];
  function colour(i) {
    if (i < 0) return "#9aa3b1";
    return i < PALETTE.length ? PALETTE[i] : "hsl(" + Math.round((i * 137.508) % 360) + ",62%,48%)";
  }
  function picture(src, alt) {
    var img = el("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = alt || "";
    img.src = src;
    return img;
  }

  if (!D) { $("no-data").hidden = false; return; }
  document.title = D.title;
  $("title").textContent = D.title;
  $("title").title = D.inputs.join("\n");

  // ------------------------------------------------------------------------------------------------------------
  // Views (tabs follow the URL hash, so a view can be linked to and reloaded)
  var views = [];
  if (D.classify) views.push("classify");
  if (D.embed) views.push("embed");
  var embedView = null;

  function show(view) {
    if (views.indexOf(view) < 0) view = views[0];
    views.forEach(function (v) {
      $("view-" + v).hidden = v !== view;
      $("tab-" + v).classList.toggle("active", v === view);
    });
    if (view === "embed" && embedView) embedView.layout();
  }
  views.forEach(function (v) {
    var tab = $("tab-" + v);
    tab.hidden = false;
    tab.addEventListener("click", function () { location.hash = v; show(v); });
  });
  var parts = [];
  if (D.classify) parts.push(D.classify.rows.length + " videos classified");
  if (D.embed) parts.push(D.embed.v.length + " clips embedded");
  $("meta").textContent = parts.join(" · ");

  // ------------------------------------------------------------------------------------------------------------
  // Failed files
  function errorList() {
    var errs = D.errors || [];
    if (!errs.length) return;
    $("errors").hidden = false;
    $("error-count").textContent = errs.length;
    var body = $("error-table").tBodies[0];
    var shown = 0;
    function more(n) {
      var frag = document.createDocumentFragment();
      errs.slice(shown, shown + n).forEach(function (e) {
        var tr = el("tr");
        tr.appendChild(el("td", "file", e.n));
        tr.appendChild(el("td", "src", e.src));
        tr.appendChild(el("td", "msg", e.e));
        frag.appendChild(tr);
      });
      body.appendChild(frag);
      shown = Math.min(errs.length, shown + n);
      var btn = $("errors-more");
      btn.hidden = shown >= errs.length;
      btn.textContent = "show all " + errs.length;
    }
    $("errors-more").addEventListener("click", function () { more(errs.length); });
    more(ERROR_ROWS);
  }

  // ------------------------------------------------------------------------------------------------------------
  // Classify view
  function classifyView(C) {
    var rows = C.rows;
    var collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });
    rows.forEach(function (r, i) {
      r.i = i;
      r.ln = r.n.toLowerCase();
      r.conf = r.s && r.p.length ? r.p[0] : -1;
      r.margin = r.s && r.p.length ? r.p[0] - (r.p.length > 1 ? r.p[1] : 0) : -1;
    });
    var state = { q: "", label: "", status: "", sort: "conf-desc", page: 0 };
    var list = rows;
    var okCount = rows.filter(function (r) { return r.s; }).length;

    // per-class summary and the label filter's options
    var body = $("class-summary").tBodies[0];
    var select = $("filter-label");
    C.summary.forEach(function (s) {
      var tr = el("tr");
      tr.dataset.label = String(s[0]);
      tr.appendChild(el("td", "cls", C.classes[s[0]]));
      tr.appendChild(el("td", "num", String(s[1])));
      tr.appendChild(el("td", "num", pct(s[1] / Math.max(okCount, 1))));
      var td = el("td", "mean");
      var bar = el("span", "meanbar");
      var fill = el("span");
      fill.style.width = (100 * s[2]).toFixed(1) + "%";
      bar.appendChild(fill);
      td.appendChild(bar);
      td.appendChild(document.createTextNode((100 * s[2]).toFixed(1) + "%"));
      tr.appendChild(td);
      tr.addEventListener("click", function () {
        select.value = state.label === tr.dataset.label ? "" : tr.dataset.label;
        select.dispatchEvent(new Event("change"));
      });
      body.appendChild(tr);
    });
    C.summary.slice().sort(function (a, b) { return collator.compare(C.classes[a[0]], C.classes[b[0]]); })
      .forEach(function (s) {
        var o = el("option", null, C.classes[s[0]] + " (" + s[1] + ")");
        o.value = String(s[0]);
        select.appendChild(o);
      });

    var sorters = {
      "conf-desc": function (a, b) { return b.conf - a.conf || a.i - b.i; },
      "conf-asc": function (a, b) { return (a.s ? a.conf : 2) - (b.s ? b.conf : 2) || a.i - b.i; },
      "margin-asc": function (a, b) { return (a.s ? a.margin : 2) - (b.s ? b.margin : 2) || a.i - b.i; },
      "name-asc": function (a, b) { return collator.compare(a.n, b.n) || a.i - b.i; },
      "name-desc": function (a, b) { return collator.compare(b.n, a.n) || a.i - b.i; },
    };

    function apply(keepPage) {
      var q = state.q.trim().toLowerCase();
      var lab = state.label === "" ? -1 : +state.label;
      list = rows.filter(function (r) {
        if (q && r.ln.indexOf(q) < 0) return false;
        if (state.status && (state.status === "ok") !== (r.s === 1)) return false;
        if (lab >= 0 && !(r.s && r.l[0] === lab)) return false;
        return true;
      });
      list.sort(sorters[state.sort]);
      if (!keepPage) state.page = 0;
      Array.prototype.forEach.call(body.rows, function (tr) {
        tr.classList.toggle("active", tr.dataset.label === state.label);
      });
      render();
    }

    function card(r) {
      var a = el("article", "card " + (r.s ? "ok" : "error"));
      a.dataset.name = r.n;
      a.dataset.status = r.s ? "ok" : "error";
      if (r.s && r.l.length) a.dataset.label = C.classes[r.l[0]];
      var th = el("div", "thumb");
      if (r.t) {
        var img = picture("thumbs/" + r.t, r.n);
        img.className = "poster";
        th.appendChild(img);
        if (r.v) {
          var preview = "thumbs/" + r.v;
          img.dataset.preview = preview;
          th.appendChild(el("span", "badge", "▶ hover"));
          a.addEventListener("mouseenter", function () { img.src = preview; });
          a.addEventListener("mouseleave", function () { img.src = "thumbs/" + r.t; });
        }
      } else {
        th.classList.add("none");
        th.textContent = r.s ? "no picture" : "not decoded";
      }
      a.appendChild(th);
      var name = el("div", "name", r.n);
      name.title = r.n;
      a.appendChild(name);
      if (r.s) {
        var ol = el("ol", "topk");
        r.l.forEach(function (li, j) {
          var item = el("li");
          var lab = el("span", "lab", C.classes[li]);
          lab.title = C.classes[li];
          var bar = el("span", "bar");
          var fill = el("span");
          fill.style.width = (100 * r.p[j]).toFixed(1) + "%";
          bar.appendChild(fill);
          item.appendChild(lab);
          item.appendChild(bar);
          item.appendChild(el("span", "pct", pct(r.p[j])));
          ol.appendChild(item);
        });
        a.appendChild(ol);
        if (r.d != null) a.appendChild(el("div", "muted", secs(r.d) + " s"));
      } else {
        a.appendChild(el("p", "err", r.e));
      }
      if (r.o) {
        var b = el("button", "overlay-btn", "TokenLearner overlay");
        b.type = "button";
        b.addEventListener("click", function () {
          $("overlay-name").textContent = r.n;
          $("overlay-img").src = "overlays/" + r.o;
          $("overlay-dialog").showModal();
        });
        a.appendChild(b);
      }
      return a;
    }

    function render() {
      var pages = Math.max(1, Math.ceil(list.length / PAGE_SIZE));
      state.page = Math.min(Math.max(state.page, 0), pages - 1);
      var start = state.page * PAGE_SIZE;
      var shown = list.slice(start, start + PAGE_SIZE);
      var frag = document.createDocumentFragment();
      shown.forEach(function (r) { frag.appendChild(card(r)); });
      $("grid").replaceChildren(frag);
      $("count").textContent = list.length
        ? "showing " + (start + 1) + "–" + (start + shown.length) + " of " + list.length +
          (list.length !== rows.length ? " (" + rows.length + " in all)" : "")
        : "no video matches (" + rows.length + " in all)";
      $("page").textContent = "page " + (state.page + 1) + " of " + pages;
      $("prev").disabled = state.page === 0;
      $("next").disabled = state.page >= pages - 1;
    }

    $("search").addEventListener("input", function (e) { state.q = e.target.value; apply(); });
    select.addEventListener("change", function (e) { state.label = e.target.value; apply(); });
    $("filter-status").addEventListener("change", function (e) { state.status = e.target.value; apply(); });
    $("sort").addEventListener("change", function (e) { state.sort = e.target.value; apply(); });
    $("prev").addEventListener("click", function () { state.page -= 1; render(); window.scrollTo(0, 0); });
    $("next").addEventListener("click", function () { state.page += 1; render(); window.scrollTo(0, 0); });
    $("overlay-close").addEventListener("click", function () { $("overlay-dialog").close(); });
    apply();
  }

  // ------------------------------------------------------------------------------------------------------------
  // Embed view: one canvas; points coloured by the classify view's top-1 label when there is one, else by video
  function embedMap(E, C) {
    var n = E.v.length, k = E.k;
    var canvas = $("map"), ctx = canvas.getContext("2d");
    var px = new Float32Array(n), py = new Float32Array(n);
    var byLabel = E.c.some(function (c) { return c >= 0; });
    var colourOf = byLabel ? function (i) { return colour(E.c[i]); } : function (i) { return colour(E.v[i]); };
    var groups = {};
    for (var i = 0; i < n; i++) (groups[colourOf(i)] = groups[colourOf(i)] || []).push(i);
    var sel = -1, hover = -1, pending = null;

    var meta = n + " clips of " + E.videos.length + " videos · " + E.dim + "-d embeddings · " + E.method;
    if (E.explained.length) meta += " (explained variance " + E.explained.map(pct).join(" + ") + ")";
    meta += " · colour: " + (byLabel ? "predicted label" : "video");
    $("embed-meta").textContent = meta;
    if (byLabel && C) {
      var seen = {};
      E.c.forEach(function (c) { seen[c] = true; });
      Object.keys(seen).map(Number).sort(function (a, b) { return a - b; }).forEach(function (c) {
        var item = el("span", null, c >= 0 ? C.classes[c] : "not classified");
        var dot = el("i");
        dot.style.background = colour(c);
        item.prepend(dot);
        $("legend").appendChild(item);
      });
    } else {
      $("legend").hidden = true;
    }

    function layout() {
      var w = canvas.clientWidth, h = canvas.clientHeight, dpr = window.devicePixelRatio || 1;
      if (!w || !h) return;
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
      ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
      var x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity;
      for (var i = 0; i < n; i++) {
        var x = E.xy[2 * i], y = E.xy[2 * i + 1];
        if (x < x0) x0 = x; if (x > x1) x1 = x; if (y < y0) y0 = y; if (y > y1) y1 = y;
      }
      var pad = 24, sx = (w - 2 * pad) / Math.max(x1 - x0, 1e-9), sy = (h - 2 * pad) / Math.max(y1 - y0, 1e-9);
      var s = Math.min(sx, sy), cx = (x0 + x1) / 2, cy = (y0 + y1) / 2;
      for (i = 0; i < n; i++) {
        px[i] = w / 2 + (E.xy[2 * i] - cx) * s;
        py[i] = h / 2 - (E.xy[2 * i + 1] - cy) * s;  // up is positive
      }
      draw();
    }

    function draw() {
      var w = canvas.clientWidth, h = canvas.clientHeight;
      ctx.clearRect(0, 0, w, h);
      var r = n > 2000 ? 2 : 3.5;
      ctx.globalAlpha = sel >= 0 ? 0.35 : 0.85;
      Object.keys(groups).forEach(function (c) {
        ctx.fillStyle = c;
        ctx.beginPath();
        groups[c].forEach(function (i) { ctx.moveTo(px[i] + r, py[i]); ctx.arc(px[i], py[i], r, 0, 2 * Math.PI); });
        ctx.fill();
      });
      ctx.globalAlpha = 1;
      if (sel >= 0) {
        ctx.strokeStyle = "#1d2330";
        ctx.lineWidth = 1;
        for (var j = 0; j < k; j++) {
          var q = E.nn[sel * k + j];
          ctx.beginPath();
          ctx.moveTo(px[sel], py[sel]);
          ctx.lineTo(px[q], py[q]);
          ctx.stroke();
          ctx.beginPath();
          ctx.arc(px[q], py[q], 5, 0, 2 * Math.PI);
          ctx.stroke();
        }
        ctx.strokeStyle = "#d62728";
        ctx.lineWidth = 2.5;
        ctx.beginPath();
        ctx.arc(px[sel], py[sel], 7, 0, 2 * Math.PI);
        ctx.stroke();
      }
      if (hover >= 0) {
        ctx.strokeStyle = "#000";
        ctx.lineWidth = 1.5;
        ctx.beginPath();
        ctx.arc(px[hover], py[hover], 6, 0, 2 * Math.PI);
        ctx.stroke();
      }
    }

    function nearest(x, y, maxDist) {
      var best = -1, bd = maxDist * maxDist;
      for (var i = 0; i < n; i++) {
        var dx = px[i] - x, dy = py[i] - y, d = dx * dx + dy * dy;
        if (d <= bd) { bd = d; best = i; }
      }
      return best;
    }
    function local(ev) {
      var r = canvas.getBoundingClientRect();
      return [ev.clientX - r.left, ev.clientY - r.top];
    }
    function label(i) {
      return E.videos[E.v[i]];
    }
    function span(i) { return secs(E.t0[i]) + "–" + secs(E.t1[i]) + " s"; }

    function tooltip(i, x, y) {
      var tip = $("tooltip");
      if (i < 0) { tip.hidden = true; return; }
      var img = $("tip-img");
      if (E.th[i]) { img.hidden = false; img.src = "thumbs/" + E.th[i]; } else { img.hidden = true; img.removeAttribute("src"); }
      $("tip-name").textContent = label(i);
      var extra = byLabel && C && E.c[i] >= 0 ? " · " + C.classes[E.c[i]] : "";
      $("tip-span").textContent = span(i) + extra;
      tip.dataset.row = String(i);
      tip.hidden = false;
      var w = canvas.clientWidth;
      tip.style.left = Math.min(x + 14, w - 210) + "px";
      tip.style.top = (y + 14) + "px";
    }

    canvas.addEventListener("mousemove", function (ev) {
      var first = pending === null;
      pending = local(ev);
      if (!first) return;  // one lookup per animation frame, with the latest position
      window.requestAnimationFrame(function () {
        var p = pending;
        pending = null;
        var i = nearest(p[0], p[1], 10);
        if (i !== hover) { hover = i; draw(); }
        tooltip(i, p[0], p[1]);
      });
    });
    canvas.addEventListener("mouseleave", function () { hover = -1; tooltip(-1); draw(); });
    canvas.addEventListener("click", function (ev) {
      var p = local(ev);
      var i = nearest(p[0], p[1], 10);
      if (i >= 0) select(i);
    });

    function entry(tag, i, sim, rank) {
      var li = el(tag);
      li.dataset.row = String(i);
      var box = el("div");
      if (rank) box.appendChild(el("span", "nn-rank", rank + "."));
      if (E.th[i]) box.appendChild(picture("thumbs/" + E.th[i], label(i)));
      var text = el("div", "nn-text");
      text.appendChild(el("div", null, label(i)));
      var line = el("div", "muted", span(i));
      if (sim != null) {
        line.textContent += " · ";
        line.appendChild(el("span", "nn-sim", sim.toFixed(3)));
      }
      text.appendChild(line);
      box.appendChild(text);
      li.appendChild(box);
      li.addEventListener("click", function () { select(i); });
      return li;
    }

    function select(i) {
      sel = i;
      $("nn-hint").hidden = true;
      $("nn-query").replaceChildren(entry("div", i, null));
      var frag = document.createDocumentFragment();
      for (var j = 0; j < k; j++) frag.appendChild(entry("li", E.nn[i * k + j], E.sim[i * k + j], j + 1));
      $("nn-list").replaceChildren(frag);
      draw();
    }

    window.addEventListener("resize", function () { if (!$("view-embed").hidden) layout(); });
    api.pointClient = function (i) {
      var r = canvas.getBoundingClientRect();
      return { x: r.left + px[i], y: r.top + py[i] };
    };
    api.select = select;
    return { layout: layout };
  }

  if (D.classify) classifyView(D.classify);
  if (D.embed) embedView = embedMap(D.embed, D.classify);
  errorList();
  show(location.hash.slice(1));
  window.addEventListener("hashchange", function () { show(location.hash.slice(1)); });
  api.readyMs = performance.now();  // for tools/bench_report.py: time from navigation start to a usable page
  api.ready = true;
})();
