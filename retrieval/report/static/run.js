// Draws the query browser of report.html from window.REPORT_DATA (report/data.js).
// State (setup, sort, group, search, page) lives in the URL hash, so a view can be linked to.
(function () {
  "use strict";
  var D = window.REPORT_DATA;
  var list = document.getElementById("query-list");
  if (!D) {
    list.textContent = "report/data.js did not load: keep report.html next to its report/ folder.";
    return;
  }
  var SORTS = [
    ["ap", "AP \u2191 worst first"],
    ["ap-desc", "AP \u2193 best first"],
    ["id", "Query id"],
    ["order", "Dataset order"],
  ];
  var OUTCOME = { p: "correct", n: "wrong", j: "junk" };
  var state = { setup: D.defaultSetup, sort: D.defaultSort, group: "", q: "", page: 1 };

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function readHash() {
    var params = new URLSearchParams(location.hash.slice(1));
    if (D.setups[params.get("setup")]) state.setup = params.get("setup");
    if (SORTS.some(function (s) { return s[0] === params.get("sort"); })) state.sort = params.get("sort");
    state.group = params.get("group") || "";
    state.q = params.get("q") || "";
    state.page = Math.max(1, parseInt(params.get("page"), 10) || 1);
  }

  function writeHash() {
    var params = new URLSearchParams();
    Object.keys(state).forEach(function (key) { if (state[key] !== "") params.set(key, state[key]); });
    try { history.replaceState(null, "", "#" + params.toString()); } catch (e) { /* some browsers refuse it on local files */ }
  }

  function formatAp(ap) { return ap === null ? "\u2014" : (100 * ap).toFixed(2); }

  // Indices of the queries that pass the filters, in the chosen order.
  function ordered() {
    var setup = D.setups[state.setup];
    var needle = state.q.toLowerCase();
    var keep = [];
    D.queries.forEach(function (query, i) {
      if (state.group && query.group !== state.group) return;
      if (needle && (query.id + "\n" + (query.text || "")).toLowerCase().indexOf(needle) < 0) return;
      keep.push(i);
    });
    var ap = function (i) { return setup.ap[i]; };
    var cmp = {
      ap: function (a, b) { return nullsLast(ap(a), ap(b), 1) || a - b; },
      "ap-desc": function (a, b) { return nullsLast(ap(a), ap(b), -1) || a - b; },
      id: function (a, b) { return D.queries[a].id.localeCompare(D.queries[b].id, undefined, { numeric: true }) || a - b; },
      order: function (a, b) { return a - b; },
    }[state.sort];
    return keep.sort(cmp);
  }

  function nullsLast(x, y, sign) {
    if (x === null || y === null) return (x === null) - (y === null);
    return sign * (x - y);
  }

  // A framed thumbnail; a click opens it large with its box and mask (lightbox.js).
  function thumb(src, uri, cls, alt, title, overlay) {
    var fig = el("figure", "thumb " + cls);
    fig.title = title;
    var link = el("a");
    link.href = uri;
    link.dataset.lightbox = "";
    link.dataset.caption = title.split("\n").filter(function (line) { return line.indexOf("click:") !== 0; }).join(" \u00b7 ");
    if (src) link.dataset.thumb = src;
    if (overlay && overlay.box) link.dataset.box = JSON.stringify(overlay.box);
    if (overlay && overlay.mask !== null && overlay.mask !== undefined) link.dataset.mask = JSON.stringify(D.masks[overlay.mask]);
    if (src) {
      var img = el("img");
      img.loading = "lazy";
      img.decoding = "async";
      img.alt = alt;
      img.src = src;
      img.onerror = function () { fig.classList.add("broken"); };
      link.appendChild(img);
    } else {
      link.appendChild(el("div", "missing", "image unreadable"));
    }
    fig.appendChild(link);
    return fig;
  }

  // A result's score as read: a verified one's inlier count, else the similarity.
  function scoreText(result) {
    if (result[1] === null) return "";
    return result[5] ? Math.round(result[1]) + " inliers" : result[1].toFixed(3);
  }

  function card(i, position) {
    var query = D.queries[i];
    var setup = D.setups[state.setup];
    var labels = setup.labels[i];
    var found = (labels.match(/p/g) || []).length;
    var article = el("article", "query");
    article.dataset.lightboxGroup = "";
    article.dataset.index = i;
    article.dataset.id = query.id;

    var head = el("div", "query-head");
    head.appendChild(el("span", "position", "#" + position));
    head.appendChild(el("span", "query-id", query.id));
    var value = setup.ap[i];
    var band = value === null ? "none" : value < 1 / 3 ? "low" : value < 2 / 3 ? "mid" : "high";
    head.appendChild(el("span", "ap " + band, "AP " + formatAp(value)));
    head.appendChild(el("span", "found", found + " of " + setup.npos[i] + " positives in the top " + labels.length));
    if (query.group) head.appendChild(el("span", "group", query.group));
    article.appendChild(head);

    var strip = el("div", "strip");
    if (query.uri) {
      var q = thumb(query.thumb, query.uri, "query-thumb", "query " + query.id, "query " + query.id + "\nclick: open large",
        { box: query.box, mask: query.mask });
      q.appendChild(el("figcaption", "", "query"));
      strip.appendChild(q);
    }
    if (query.text != null) {
      // the query's words: beside its image (composed), or instead of it (text)
      var words = el("figure", "thumb query-thumb query-words");
      words.appendChild(el("blockquote", "", query.text));
      words.appendChild(el("figcaption", "", query.uri ? "+ words" : "query"));
      strip.appendChild(words);
    }
    var results = el("div", "results");
    query.results.forEach(function (result, r) {
      var outcome = labels.charAt(r);
      var image = D.gallery[result[0]];
      var score = scoreText(result);
      var checked = result[5] === 1;
      var fig = thumb(result[2], image[1], outcome + (checked ? " verified" : ""), image[0],
        "#" + (r + 1) + " " + image[0] + "\n" + OUTCOME[outcome] + (checked ? ", verified: " : ", score ") + score +
        "\nclick: open large with its box and mask", { box: result[3], mask: result[4] });
      fig.appendChild(el("span", "badge", String(r + 1)));
      if (checked) fig.appendChild(el("span", "verified-mark", "\u2713 verified"));
      fig.appendChild(el("figcaption", "", score));
      results.appendChild(fig);
    });
    if (!query.results.length) results.appendChild(el("p", "empty", "no results"));
    strip.appendChild(results);
    article.appendChild(strip);
    return article;
  }

  function pager(nav, pages, total, first, last) {
    nav.textContent = "";
    var prev = el("button", "", "\u2039 Prev");
    prev.disabled = state.page <= 1;
    prev.onclick = function () { go(state.page - 1); };
    var next = el("button", "", "Next \u203a");
    next.disabled = state.page >= pages;
    next.onclick = function () { go(state.page + 1); };
    nav.appendChild(prev);
    nav.appendChild(el("span", "page-info",
      total ? "queries " + first + "\u2013" + last + " of " + total + " \u00b7 page " + state.page + " / " + pages
            : "no query matches"));
    nav.appendChild(next);
  }

  function go(page) {
    state.page = page;
    render();
    document.getElementById("queries").scrollIntoView();
  }

  function render() {
    var order = ordered();
    var pages = Math.max(1, Math.ceil(order.length / D.pageSize));
    state.page = Math.min(state.page, pages);
    var start = (state.page - 1) * D.pageSize;
    var shown = order.slice(start, start + D.pageSize);
    list.textContent = "";
    var fragment = document.createDocumentFragment();
    shown.forEach(function (i, n) { fragment.appendChild(card(i, start + n + 1)); });
    list.appendChild(fragment);
    document.querySelectorAll(".pager").forEach(function (nav) {
      pager(nav, pages, order.length, start + 1, start + shown.length);
    });
    document.querySelectorAll("#toolbar .sort button").forEach(function (button) {
      button.setAttribute("aria-pressed", String(button.dataset.sort === state.sort));
    });
    document.querySelectorAll("figure[data-setup]").forEach(function (fig) {
      fig.hidden = fig.dataset.setup !== state.setup;
    });
    writeHash();
  }

  function select(label, options, value, onchange) {
    var wrap = el("label", "control", label + " ");
    var box = el("select");
    options.forEach(function (option) {
      var node = el("option", "", option[1]);
      node.value = option[0];
      box.appendChild(node);
    });
    box.value = value;
    box.onchange = function () { onchange(box.value); state.page = 1; render(); };
    wrap.appendChild(box);
    return wrap;
  }

  function toolbar() {
    var bar = document.getElementById("toolbar");
    var sort = el("div", "sort");
    sort.appendChild(el("span", "control-label", "Sort"));
    SORTS.forEach(function (s) {
      var button = el("button", "", s[1]);
      button.dataset.sort = s[0];
      button.onclick = function () { state.sort = s[0]; state.page = 1; render(); };
      sort.appendChild(button);
    });
    bar.appendChild(sort);
    var setups = Object.keys(D.setups);
    if (setups.length > 1) {
      bar.appendChild(select("Setup", setups.map(function (s) { return [s, s]; }), state.setup,
        function (v) { state.setup = v; }));
    }
    var groups = Array.from(new Set(D.queries.map(function (q) { return q.group; }).filter(Boolean))).sort();
    if (groups.length > 1) {
      bar.appendChild(select("Group", [["", "all"]].concat(groups.map(function (g) { return [g, g]; })),
        state.group, function (v) { state.group = v; }));
    }
    var search = el("input");
    search.type = "search";
    search.placeholder = D.queries.some(function (q) { return q.text != null; }) ? "filter by query id or words" : "filter by query id";
    search.value = state.q;
    search.oninput = function () { state.q = search.value; state.page = 1; render(); };
    bar.appendChild(search);
    var head = el("div", "list-head");
    var top = el("nav", "pager");
    top.id = "pager-top";
    head.appendChild(top);
    var legend = el("div", "legend");
    ["p", "n", "j"].forEach(function (k) { legend.appendChild(el("span", "key " + k, OUTCOME[k])); });
    legend.appendChild(el("span", "key overlay", "object box / mask"));
    if (D.verified) legend.appendChild(el("span", "key verified", "verified: score = inliers"));
    head.appendChild(legend);
    bar.parentNode.insertBefore(head, list);
  }

  readHash();
  toolbar();
  render();
})();
