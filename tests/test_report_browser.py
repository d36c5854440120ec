"""The report's HTML page in headless Chromium: every plot decodes and is drawn (slow).

Needs Debian's chromium (apt-get install -y chromium); skipped with a reason where it is absent.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from test_report_run import _pngs, assert_png_not_blank, make_run

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (apt-get install -y chromium)")


@pytest.mark.slow
def test_report_html_in_headless_chromium(tmp_path):
    from speed.analysis.report import write_report

    browser = _chromium()
    make_run(tmp_path / "run", scaling=True)
    res = write_report(tmp_path / "run")
    html = Path(res["html"]).read_text()
    pngs = _pngs(html)
    assert len(pngs) >= 6
    for png in pngs:
        assert_png_not_blank(png)
    # a copy with a probe script: the title becomes the number of images the browser decoded
    probe = tmp_path / "probe.html"
    probe.write_text(html.replace("</body>", "<script>window.addEventListener('load', () => {document.title = "
                                  "'DECODED:' + [...document.images].filter(i => i.complete && i.naturalWidth > 0)"
                                  ".length;});</script></body>"))
    profile = tmp_path / "profile"
    dom = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=10000",
                          "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r"<title>DECODED:(\d+)</title>", dom.stdout)
    assert m, dom.stdout[:500]
    assert int(m.group(1)) == len(pngs)
    assert dom.stdout.count("data:image/png;base64,") == len(pngs)
    shot = tmp_path / "shot.png"
    proc = subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--window-size=1200,3000", Path(res["html"]).as_uri()],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    assert_png_not_blank(shot.read_bytes())
