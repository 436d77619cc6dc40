// The leaderboard's tables: per dataset, rows grouped by Hydra sweep, reruns of one
// configuration collapsed to the latest, sorted by any column (the first main metric at
// first), and the best value of each metric marked within each group. Rows carry
// data-sweep, data-config and data-order (their place in the CSV: later is newer).
(function () {
  "use strict";
  var filter = document.getElementById("dataset-filter");
  var groupBox = document.getElementById("group-sweeps");
  var collapseBox = document.getElementById("collapse-reruns");
  var allColumns = document.getElementById("all-columns");
  var boards = [];

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function Board(section) {
    var table = section.querySelector("table.board");
    var headers = Array.from(table.tHead.rows[0].cells);
    var primary = headers.findIndex(function (th) { return th.dataset.primary !== undefined; });
    var self = {
      section: section,
      table: table,
      headers: headers,
      rows: Array.from(table.querySelector("tbody.source").rows),
      sweeps: JSON.parse(section.dataset.sweeps || "{}"),
      sort: primary >= 0 ? { col: primary, dir: -1 } : { col: 0, dir: -1 },
      expanded: {},
    };
    headers.forEach(function (th, col) {
      th.querySelector("button").addEventListener("click", function () {
        var same = self.sort.col === col;
        var first = th.dataset.type === "num" ? -1 : 1;  // numbers best first, text A to Z
        self.sort = { col: col, dir: same ? -self.sort.dir : first };
        render(self);
      });
    });
    self.rows.forEach(function (row) {
      row.querySelector("button.reruns").addEventListener("click", function () {
        var key = groupKey(row) + "\n" + row.dataset.config;
        self.expanded[key] = !self.expanded[key];
        render(self);
      });
    });
    var picker = section.querySelector("select.chart-metric");
    if (picker) {
      picker.addEventListener("change", function () {
        section.querySelectorAll("figure[data-chart]").forEach(function (fig) {
          fig.hidden = fig.dataset.metric !== picker.value;
        });
      });
    }
    return self;
  }

  function groupKey(row) { return groupBox.checked ? row.dataset.sweep : ""; }
  function order(row) { return Number(row.dataset.order); }

  function value(board, row, col) {
    var raw = row.cells[col].dataset.v;
    if (raw === undefined || raw === "") return null;
    var num = Number(raw);
    return board.headers[col].dataset.type === "num" && !isNaN(num) ? num : raw;
  }

  function compare(board) {
    var col = board.sort.col, dir = board.sort.dir;
    return function (a, b) {
      var x = value(board, a, col), y = value(board, b, col);
      if (x === null || y === null) return (x === null) - (y === null) || order(b) - order(a);
      var c = typeof x === "number" && typeof y === "number" ? x - y
        : String(x).localeCompare(String(y), undefined, { numeric: true });
      return dir * c || order(b) - order(a);
    };
  }

  // One tbody per group: sweeps (newest first) and the runs of no sweep; each lists the
  // latest run of every configuration, its older runs folded under it.
  function render(board) {
    Array.from(board.table.tBodies).forEach(function (tbody) { tbody.remove(); });
    var groups = {};
    board.rows.forEach(function (row) { (groups[groupKey(row)] = groups[groupKey(row)] || []).push(row); });
    var keys = Object.keys(groups).sort(function (a, b) {
      return Math.max.apply(null, groups[b].map(order)) - Math.max.apply(null, groups[a].map(order));
    });
    var cmp = compare(board);
    board.headers.forEach(function (th, col) {
      th.setAttribute("aria-sort", col === board.sort.col ? (board.sort.dir > 0 ? "ascending" : "descending") : "none");
    });
    keys.forEach(function (key) {
      var tbody = el("tbody", "group");
      tbody.dataset.group = key;
      if (groupBox.checked) tbody.appendChild(groupHead(board, key, groups[key]));
      var byConfig = {};
      groups[key].forEach(function (row) { (byConfig[row.dataset.config] = byConfig[row.dataset.config] || []).push(row); });
      var leads = [];
      Object.keys(byConfig).forEach(function (config) {
        var runs = byConfig[config].sort(function (a, b) { return order(b) - order(a); });
        if (collapseBox.checked) leads.push(runs[0]); else leads = leads.concat(runs);
      });
      leads.sort(cmp);
      leads.forEach(function (row) {
        var runs = byConfig[row.dataset.config];
        var open = Boolean(board.expanded[key + "\n" + row.dataset.config]);
        var button = row.querySelector("button.reruns");
        row.hidden = false;
        row.classList.remove("older");
        button.hidden = !collapseBox.checked || runs.length < 2;
        button.textContent = "\u00d7" + runs.length;
        button.title = runs.length + " runs of this configuration: " + (open ? "fold the older ones" : "show the older ones");
        button.setAttribute("aria-expanded", String(open));
        tbody.appendChild(row);
        if (!collapseBox.checked) return;
        runs.slice(1).forEach(function (older) {
          older.hidden = !open;
          older.classList.add("older");
          older.querySelector("button.reruns").hidden = true;
          tbody.appendChild(older);
        });
      });
      board.table.appendChild(tbody);
      markBest(board, tbody);
    });
  }

  function groupHead(board, key, rows) {
    var tr = el("tr", "group-head");
    var th = el("th");
    th.colSpan = board.headers.length;
    var sweep = board.sweeps[key];
    if (sweep) {
      th.appendChild(el("span", "group-name", "sweep " + sweep.label));
      sweep.swept.forEach(function (o) { th.appendChild(el("code", "swept", o)); });
    } else {
      th.appendChild(el("span", "group-name", "runs of no sweep"));
    }
    th.appendChild(el("span", "group-count", rows.length + (rows.length === 1 ? " run" : " runs")));
    tr.appendChild(th);
    return tr;
  }

  // Best per group and metric among the rows shown; nothing is marked when every row shown
  // has the same value (a tie of all is no winner), nor in a group of one row.
  function markBest(board, tbody) {
    var shown = Array.from(tbody.rows).filter(function (row) { return !row.hidden && row.dataset.config !== undefined; });
    board.headers.forEach(function (th, col) {
      if (th.dataset.metric === undefined) return;
      var values = shown.map(function (row) { return value(board, row, col); }).filter(function (v) { return v !== null; });
      var best = values.length ? Math.max.apply(null, values) : null;
      var winners = values.filter(function (v) { return v === best; }).length;
      shown.forEach(function (row) {
        var v = value(board, row, col);
        row.cells[col].classList.toggle("best", values.length > 1 && winners < values.length && v === best);
      });
      Array.from(tbody.rows).forEach(function (row) {
        if (row.hidden && row.cells[col]) row.cells[col].classList.remove("best");
      });
    });
  }

  function applyFilter() {
    var shown = 0, total = 0;
    boards.forEach(function (board) {
      board.section.hidden = Boolean(filter.value) && board.section.dataset.dataset !== filter.value;
      total += board.rows.length;
      if (!board.section.hidden) {
        shown += board.rows.filter(function (row) { return !row.hidden; }).length;
      }
    });
    document.getElementById("row-count").textContent = shown + " rows shown of " + total + " runs";
  }

  function renderAll() {
    boards.forEach(render);
    applyFilter();
  }

  document.querySelectorAll("section.dataset").forEach(function (section) { boards.push(Board(section)); });
  filter.addEventListener("change", applyFilter);
  groupBox.addEventListener("change", renderAll);
  collapseBox.addEventListener("change", renderAll);
  allColumns.addEventListener("click", function () {
    var on = document.body.classList.toggle("all-columns");
    allColumns.setAttribute("aria-pressed", String(on));
    allColumns.textContent = on ? "main columns only" : "all columns";
  });
  renderAll();
})();
