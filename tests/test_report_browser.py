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
from test_report import EXPECTED_LABELS, _leaderboard_csv, make_run  # tests/ is on sys.path under pytest

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

BOARD_PROBE = """<script>
window.addEventListener("load", function () {
  function models() {
    return Array.from(document.querySelectorAll("table.board tbody tr")).filter(function (r) { return !r.hidden; })
      .map(function (r) { return r.cells[2].textContent; });
  }
  var out = {initial: models()};
  var headers = Array.from(document.querySelectorAll("table.board th button"));
  var map = headers.filter(function (b) { return b.textContent.indexOf("map") === 0; })[0];
  map.click(); out.mapFirst = models();
  map.click(); out.mapSecond = models();
  var best = function () { return Array.from(document.querySelectorAll("td.best")).map(function (td) { return td.textContent; }); };
  out.bestAll = best();
  var filter = document.getElementById("dataset-filter");
  filter.value = "toy"; filter.dispatchEvent(new Event("change")); out.toyOnly = models();
  out.bestToy = best();
  var pre = document.createElement("pre"); pre.id = "probe"; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>"""


def _chromium(tmp: Path, *args: str) -> str:
    done = subprocess.run(
        [CHROMIUM, *FLAGS, f"--user-data-dir={tmp / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _probe(page: Path, script: str, tmp: Path) -> dict:
    """Load a copy of `page` with `script` appended; return the JSON the script left in the DOM."""
    probe = page.with_name("probe-" + page.name)
    probe.write_text(page.read_text().replace("</body>", script + "</body>"))
    dom = _chromium(tmp, "--window-size=1400,3000", "--dump-dom", probe.as_uri())
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


def test_leaderboard_in_browser(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    build_run_report(run)
    page = build_leaderboard_page(_leaderboard_csv(tmp_path, run))
    seen = _probe(page, BOARD_PROBE, tmp_path)
    assert seen["initial"] == ["a", "b", "c"]
    assert seen["mapFirst"] == ["b", "a", "c"]  # numbers sort best first on the first click
    assert seen["mapSecond"] == ["c", "a", "b"]
    assert seen["toyOnly"] == ["a", "b"]
    assert sorted(seen["bestAll"]) == ["15.00", "30.00", "65.00"]  # best per dataset
    assert sorted(seen["bestToy"]) == ["30.00", "65.00"]
    _chromium(tmp_path, "--window-size=1400,600", f"--screenshot={tmp_path / 'leaderboard.png'}", page.as_uri())
    assert (tmp_path / "leaderboard.png").stat().st_size > 0
