/* cellbench leaderboard pages: sortable tables. No dependencies, no network, works from file://.
 *
 * Every <table class="sortable"> gets clickable headers. A header's data-type ("number" or
 * "text") says how to compare; a cell's data-value (when present) is compared instead of its
 * text, so "0.8123 ± 0.0100" sorts by 0.8123. Empty values always sort last. The first click on
 * a column with data-better="higher" sorts best-first (descending). Ties keep the published
 * rank order. This script only reorders existing rows; it never writes markup.
 */
"use strict";
(function () {
  function valueOf(row, index, type) {
    var cell = row.cells[index];
    if (!cell) {
      return null;
    }
    var raw = cell.getAttribute("data-value");
    if (raw === null) {
      raw = cell.textContent.trim();
    }
    if (raw === "") {
      return null;
    }
    if (type === "number") {
      var v = parseFloat(raw);
      return isNaN(v) ? null : v;
    }
    return raw.toLowerCase();
  }

  function sortBy(table, th) {
    var headers = Array.prototype.slice.call(th.parentNode.children);
    var index = headers.indexOf(th);
    var type = th.getAttribute("data-type") || "text";
    var state = th.getAttribute("aria-sort");
    var dir;
    if (state === "ascending") {
      dir = "descending";
    } else if (state === "descending") {
      dir = "ascending";
    } else {
      dir = th.getAttribute("data-better") === "higher" ? "descending" : "ascending";
    }
    headers.forEach(function (h) {
      h.setAttribute("aria-sort", "none");
    });
    th.setAttribute("aria-sort", dir);
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = valueOf(a, index, type);
      var y = valueOf(b, index, type);
      var order = Number(a.getAttribute("data-order")) - Number(b.getAttribute("data-order"));
      if (x === null && y === null) {
        return order;
      }
      if (x === null) {
        return 1;
      }
      if (y === null) {
        return -1;
      }
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (dir === "descending") {
        c = -c;
      }
      return c !== 0 ? c : order;
    });
    rows.forEach(function (r) {
      body.appendChild(r);
    });
    table.setAttribute("data-sorted-by", th.getAttribute("data-key") || String(index));
  }

  function init() {
    var tables = document.querySelectorAll("table.sortable");
    Array.prototype.forEach.call(tables, function (table) {
      Array.prototype.forEach.call(table.tBodies[0].rows, function (row, i) {
        row.setAttribute("data-order", String(i));
      });
      var headers = table.tHead.rows[0].children;
      Array.prototype.forEach.call(headers, function (th) {
        th.setAttribute("tabindex", "0");
        if (!th.hasAttribute("aria-sort")) {
          th.setAttribute("aria-sort", "none");
        }
        th.addEventListener("click", function () {
          sortBy(table, th);
        });
        th.addEventListener("keydown", function (event) {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            sortBy(table, th);
          }
        });
      });
    });
    document.documentElement.setAttribute("data-sortable-ready", "1");
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
