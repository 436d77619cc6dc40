// Sorting by any column and filtering by dataset for the leaderboard table; the best value of
// each metric column within each dataset is marked.
(function () {
  "use strict";
  var table = document.querySelector("table.board");
  var body = table.tBodies[0];
  var headers = Array.from(table.tHead.rows[0].cells);
  var filter = document.getElementById("dataset-filter");

  function value(row, col) {
    var raw = row.cells[col].dataset.v;
    if (raw === undefined || raw === "") return null;
    var num = Number(raw);
    return headers[col].dataset.type === "num" && !isNaN(num) ? num : raw;
  }

  function sortBy(col) {
    var th = headers[col];
    var dir = th.getAttribute("aria-sort") === "descending" ? 1 : -1;
    if (th.getAttribute("aria-sort") === null) dir = th.dataset.type === "num" ? -1 : 1;
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    var rows = Array.from(body.rows);
    rows.sort(function (a, b) {
      var x = value(a, col), y = value(b, col);
      if (x === null || y === null) return (x === null) - (y === null);
      if (typeof x === "number") return dir * (x - y);
      return dir * String(x).localeCompare(String(y), undefined, { numeric: true });
    });
    rows.forEach(function (row) { body.appendChild(row); });
  }

  // Best per dataset: scores on different datasets are not comparable.
  function markBest() {
    var visible = Array.from(body.rows).filter(function (row) { return !row.hidden; });
    headers.forEach(function (th, col) {
      if (th.dataset.metric === undefined) return;
      var best = {};
      visible.forEach(function (row) {
        var v = value(row, col), key = row.dataset.dataset;
        if (v !== null && (best[key] === undefined || v > best[key])) best[key] = v;
      });
      Array.from(body.rows).forEach(function (row) {
        var v = value(row, col);
        row.cells[col].classList.toggle("best", !row.hidden && v !== null && v === best[row.dataset.dataset]);
      });
    });
  }

  function applyFilter() {
    Array.from(body.rows).forEach(function (row) {
      row.hidden = Boolean(filter.value) && row.dataset.dataset !== filter.value;
    });
    var shown = Array.from(body.rows).filter(function (row) { return !row.hidden; }).length;
    document.getElementById("row-count").textContent = shown + " of " + body.rows.length + " runs";
    markBest();
  }

  headers.forEach(function (th, col) {
    th.querySelector("button").addEventListener("click", function () { sortBy(col); });
  });
  filter.addEventListener("change", applyFilter);
  applyFilter();
})();
