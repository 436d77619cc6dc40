"""Open the pages in headless Chromium from disk (file://, no server, no network) and use them.

A copy of each page with a small probe script appended clicks the real controls and writes
what it saw into the DOM, which `--dump-dom` returns; no DevTools protocol or driver needed.
"""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from retrieval.report import build_leaderboard_page, build_run_report
from test_report import EXPECTED_LABELS, _leaderboard_csv, board_csv, make_run, make_verified_run  # tests/ is on sys.path

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Chromium not installed (apt-get install -y chromium): browser checks skipped"
)
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=10000",
]

RUN_PROBE = """<script>
window.addEventListener("load", function () {
  function ids() {
    return Array.from(document.querySelectorAll("#query-list .query")).map(function (a) { return a.dataset.id; });
  }
  function count(cls) { return document.querySelectorAll("#query-list .results figure." + cls).length; }
  function finish(visible) {
    var out = {
      images: visible.length,
      unloaded: visible.filter(function (i) { return !(i.complete && i.naturalWidth > 0); }).map(function (i) { return i.src; }),
      frames: {p: count("p"), n: count("n"), j: count("j")},
      initial: ids(),
    };
    document.querySelector('[data-sort="ap-desc"]').click(); out.apDesc = ids();
    document.querySelector('[data-sort="id"]').click(); out.byId = ids();
    document.querySelector('[data-sort="ap"]').click(); out.apAsc = ids();
    var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  function wait(tries) {
    var visible = Array.from(document.images).filter(function (i) {
      var box = i.getBoundingClientRect(); return box.bottom > 0 && box.top < innerHeight;
    });
    var pending = visible.some(function (i) { return !i.complete; });
    if (pending && tries > 0) setTimeout(wait, 100, tries - 1); else finish(visible);
  }
  wait(50);
});
</script>"""

OLD_BOARD_PROBE = """<script>
window.addEventListener("load", function () {
  function models(dataset) {
    var section = document.querySelector('section[data-dataset="' + dataset + '"]');
    return Array.from(section.querySelectorAll("tbody tr[data-config]")).filter(function (r) { return !r.hidden; })
      .map(function (r) { return r.cells[1].textContent; });
  }
  var out = {initial: models("toy")};
  document.querySelector('section[data-dataset="toy"] th[data-col="map"] button').click(); out.mapAgain = models("toy");
  out.best = Array.from(document.querySelectorAll("td.best")).map(function (td) { return td.textContent; });
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

BOARD_PROBE = """<script>
window.addEventListener("load", function () {
  var sections = Array.from(document.querySelectorAll("section.dataset"));
  function shown(s) { return Array.from(s.querySelectorAll((s.tagName === "TBODY" ? "" : "tbody.group ") + "tr[data-config]")).filter(function (r) { return !r.hidden; }); }
  function right(s, col) {
    var th = s.querySelector('th[data-col="' + col + '"]');
    return th ? th.getBoundingClientRect().right : null;
  }
  function column(s, col, within) {
    var index = Array.from(s.querySelectorAll("thead th")).findIndex(function (th) { return th.dataset.col === col; });
    return shown(within || s).map(function (r) { return Number(r.cells[index].dataset.v); });
  }
  function state() {
    var out = {};
    sections.forEach(function (s) {
      var best = Array.from(s.querySelectorAll("tbody.group")).map(function (tbody) {
        var counts = {};
        tbody.querySelectorAll("td.best").forEach(function (td) {
          var col = s.querySelectorAll("thead th")[td.cellIndex].dataset.col;
          counts[col] = (counts[col] || 0) + 1;
        });
        return counts;
      });
      out[s.dataset.dataset] = {
        rows: shown(s).length,
        groups: Array.from(s.querySelectorAll("tr.group-head")).map(function (g) { return g.textContent; }),
        reruns: Array.from(s.querySelectorAll("button.reruns")).filter(function (b) { return !b.hidden; }).map(function (b) { return b.textContent; }),
        older: shown(s).filter(function (r) { return r.classList.contains("older"); }).length,
        best: best,
        hidden: s.hidden,
      };
    });
    return out;
  }
  var out = {layout: {}};
  sections.forEach(function (s) {
    var primary = s.querySelector("th[data-primary]");
    var more = s.querySelector("th.more");
    out.layout[s.dataset.dataset] = {
      primary: primary.dataset.col, primaryRight: primary.getBoundingClientRect().right,
      rerankRight: right(s, "rerank"), moreWidth: more.getBoundingClientRect().width,
      bars: Array.from(s.querySelectorAll("figure[data-chart=bars]:not([hidden]) rect.bar")).map(function (r) { return r.getBoundingClientRect().width; }),
      points: Array.from(s.querySelectorAll("figure[data-chart=speed]:not([hidden]) circle.point")).filter(function (c) { return c.getBoundingClientRect().width > 0; }).length,
      mapOrder: Array.from(s.querySelectorAll("tbody.group")).map(function (g) { return column(s, primary.dataset.col, g); }),
    };
  });
  out.initial = state();
  var instre = sections[0];
  document.getElementById("group-sweeps").click(); out.ungrouped = state();
  instre.querySelector("button.reruns:not([hidden])").click(); out.unfolded = state();
  instre.querySelector("button.reruns:not([hidden])").click(); out.folded = state();
  document.getElementById("collapse-reruns").click(); out.everyRun = state();
  instre.querySelector('th[data-col="mAP"] button').click(); out.mapAscending = column(instre, "mAP");
  document.getElementById("all-columns").click();
  out.moreWidth = instre.querySelector("th.more").getBoundingClientRect().width;
  var picker = instre.querySelector("select.chart-metric");
  picker.value = "hit@1"; picker.dispatchEvent(new Event("change"));
  out.charts = Array.from(instre.querySelectorAll("figure[data-chart]")).filter(function (f) { return !f.hidden; }).map(function (f) { return f.dataset.metric; });
  var filter = document.getElementById("dataset-filter");
  filter.value = "pitts30k"; filter.dispatchEvent(new Event("change")); out.filtered = state();
  out.count = document.getElementById("row-count").textContent;
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""

VERIFIED_PROBE = """<script>
window.addEventListener("load", function () {
  var figures = Array.from(document.querySelectorAll("#query-list .results figure"));
  var verified = figures.filter(function (f) { return f.classList.contains("verified"); });
  var out = {
    steps: document.getElementById("steps").textContent,
    stepNames: Array.from(document.querySelectorAll("#steps [data-step]")).map(function (s) { return s.dataset.step; }),
    verified: verified.length,
    marks: verified.map(function (f) { return f.querySelector(".verified-mark").textContent; }),
    verifiedScores: verified.map(function (f) { return f.querySelector("figcaption").textContent; }),
    otherScores: figures.filter(function (f) { return !f.classList.contains("verified"); }).map(function (f) { return f.querySelector("figcaption").textContent; }),
    widths: figures.slice(0, 5).map(function (f) { return f.getBoundingClientRect().width; }),
  };
  verified[0].querySelector("a").click();
  var box = document.querySelector(".lightbox");
  function finish(tries) {
    if (!box.dataset.drawn && tries > 0) return setTimeout(finish, 100, tries - 1);
    var canvas = box.querySelector("canvas"), img = box.querySelector("img");
    var pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data, yellow = 0;
    for (var i = 0; i < pixels.length; i += 4) if (pixels[i] > 200 && pixels[i + 1] > 170 && pixels[i + 2] < 90 && pixels[i + 3] > 200) yellow++;
    out.lightbox = {open: !box.hidden, drawn: box.dataset.drawn, yellow: yellow, width: img.getBoundingClientRect().width,
                    original: img.src.indexOf("file:") === 0 && img.src.indexOf("/report/thumbs/") < 0,
                    caption: box.querySelector(".lightbox-caption").textContent};
    var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  finish(50);
});
</script>"""


def _chromium(tmp: Path, *args: str) -> str:
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _probe(page: Path, script: str, tmp: Path, window: str = "1400,3000") -> dict:
    """Load a copy of `page` with `script` appended; return the JSON the script left in the DOM."""
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = _chromium(tmp, f"--window-size={window}", "--dump-dom", probe.as_uri())
    found = re.search(r'<pre id="probe">(.*?)</pre>', dom, re.S)
    assert found, "probe script did not finish: page raised an error?\n" + dom[-2000:]
    return json.loads(html.unescape(found.group(1)))


def test_run_report_in_browser(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    page = build_run_report(run, top_k=6)
    seen = _probe(page, RUN_PROBE, tmp_path)
    assert seen["images"] == 3 + 6 + 5 + 3 and seen["unloaded"] == []
    labels = "".join(EXPECTED_LABELS["easy"])
    assert seen["frames"] == {k: labels.count(k) for k in "pnj"}
    assert seen["initial"] == ["q1.jpg", "q2.jpg", "q0.jpg"]  # AP 0.2, 0.5, 0.9: worst first
    assert seen["apDesc"] == ["q0.jpg", "q2.jpg", "q1.jpg"]
    assert seen["byId"] == ["q0.jpg", "q1.jpg", "q2.jpg"]
    assert seen["apAsc"] == seen["initial"]

    shot = tmp_path / "report.png"
    _chromium(tmp_path, "--window-size=1400,1700", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as image:
        assert image.size == (1400, 1700)
        assert len(set(map(tuple, np.asarray(image.convert("RGB").resize((70, 85))).reshape(-1, 3).tolist()))) > 50  # not a blank page


def test_old_leaderboard_csv_in_browser(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    build_run_report(run)
    page = build_leaderboard_page(_leaderboard_csv(tmp_path, run))
    seen = _probe(page, OLD_BOARD_PROBE, tmp_path)
    assert seen["initial"] == ["b", "a"]  # best map first
    assert seen["mapAgain"] == ["a", "b"]
    assert sorted(seen["best"]) == ["30.00", "65.00"]  # toy only: "other" has one run, nothing to beat


def test_leaderboard_in_browser(tmp_path: Path) -> None:
    """30 runs of three datasets at 1400x1000: main metrics and re-rank steps on the first
    screen, sweeps grouped, reruns collapsed, best marked per group, charts drawn."""
    page = build_leaderboard_page(board_csv(tmp_path))
    seen = _probe(page, BOARD_PROBE, tmp_path, window="1400,1000")
    layout = seen["layout"]
    assert {d: v["primary"] for d, v in layout.items()} == {"instre": "mAP", "roxford5k": "easy/mAP", "pitts30k": "hit@1"}
    for dataset, where in layout.items():
        assert 0 < where["primaryRight"] <= 1400, dataset
        assert where["moreWidth"] == 0, dataset  # the other columns wait behind the toggle
        assert all(group == sorted(group, reverse=True) for group in where["mapOrder"])  # best first in each group
    assert 0 < layout["instre"]["rerankRight"] <= 1400 and 0 < layout["roxford5k"]["rerankRight"] <= 1400
    assert layout["pitts30k"]["rerankRight"] is None  # nobody re-ranked pitts30k
    assert [len(layout[d]["bars"]) for d in ("instre", "roxford5k", "pitts30k")] == [7, 7, 5]  # one per configuration
    assert all(width > 20 for d in layout for width in layout[d]["bars"])
    assert layout["pitts30k"]["points"] == 10 and layout["instre"]["points"] == 0  # accuracy against speed

    initial = seen["initial"]
    assert [initial[d]["rows"] for d in ("instre", "roxford5k", "pitts30k")] == [9, 8, 5]
    groups = initial["instre"]["groups"]
    assert len(groups) == 3 and groups[0].startswith("runs of no sweep")
    assert groups[2] == "sweep multirun/2026-05-01_10-00-00model=effnet_lite0,dinov2_vits14query=box,mask4 runs"
    assert initial["instre"]["reruns"] == ["\u00d72"] and initial["pitts30k"]["reruns"] == ["\u00d72"] * 5
    # best per group: one winner of mAP in each; hit@10 is 100 everywhere, a tie of all: no winner
    assert [g.get("mAP") for g in initial["instre"]["best"]] == [1, 1, 1]
    assert all("hit@10" not in g for g in initial["instre"]["best"])

    ungrouped = seen["ungrouped"]
    assert ungrouped["instre"]["groups"] == [] and ungrouped["instre"]["rows"] == 7  # the sweep's run joins its reruns
    # the effnet box run of the first sweep and its two reruns; the dinov2 box run of the first
    # sweep and the same configuration in the second
    assert ungrouped["instre"]["reruns"] == ["\u00d72", "\u00d73"] and ungrouped["roxford5k"]["reruns"] == ["\u00d74"]
    assert [g.get("mAP") for g in ungrouped["instre"]["best"]] == [1]
    assert seen["unfolded"]["instre"]["rows"] == 8 and seen["unfolded"]["instre"]["older"] == 1
    assert seen["folded"]["instre"]["rows"] == 7
    every = seen["everyRun"]
    assert sum(every[d]["rows"] for d in every) == 30 and every["instre"]["reruns"] == []
    assert seen["mapAscending"] == sorted(seen["mapAscending"]) and len(seen["mapAscending"]) == 10
    assert seen["moreWidth"] > 0
    assert seen["charts"] == ["hit@1"]
    assert [seen["filtered"][d]["hidden"] for d in ("instre", "roxford5k", "pitts30k")] == [True, True, False]
    assert seen["count"] == "10 rows shown of 30 runs"

    shot = tmp_path / "leaderboard.png"
    _chromium(tmp_path, "--window-size=1400,1000", f"--screenshot={shot}", page.as_uri())
    with Image.open(shot) as image:
        assert image.size == (1400, 1000)
        assert len(set(map(tuple, np.asarray(image.convert("RGB").resize((70, 50))).reshape(-1, 3).tolist()))) > 30


def test_verified_run_report_in_browser(make_cfg, monkeypatch: pytest.MonkeyPatch, lite0, tmp_path: Path) -> None:
    """A real run re-ranked by verify: the header names the step, verified results are marked
    and scored in inliers, and a click opens one large with its projected box drawn."""
    run = make_verified_run(make_cfg, monkeypatch, lite0, tmp_path / "verified")
    seen = _probe(run / "report.html", VERIFIED_PROBE, tmp_path, window="1400,1000")
    assert seen["stepNames"] == ["verify"] and "verify: sift, homography, ≥ 8 inliers, top 100" in seen["steps"]
    assert re.search(r"\d+ results verified in \d+ of 12 queries", seen["steps"])
    assert seen["verified"] > 0 and set(seen["marks"]) == {"\u2713 verified"}
    assert all(re.fullmatch(r"\d+ inliers", score) for score in seen["verifiedScores"])
    assert all(re.fullmatch(r"-?\d\.\d{3}", score) for score in seen["otherScores"])
    assert min(seen["widths"]) >= 160
    box = seen["lightbox"]
    assert box["open"] and box["original"] and "box" in box["drawn"].split() and box["yellow"] > 100
    assert box["width"] > 600 and "verified" in box["caption"]
