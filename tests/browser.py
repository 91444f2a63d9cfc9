"""Render a page in headless Chromium and report which of its images loaded.

The page is loaded from disk (file://), as a user opens it, inside an iframe of a small harness
page whose script records, once the page and its images have loaded, each ``<img>``'s
``naturalWidth`` into the DOM that ``--dump-dom`` prints. No Python browser driver is needed:
Debian's ``chromium-headless-shell`` (or ``chromium``) is enough; scripts/setup.sh installs it.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")

_HARNESS = """<!DOCTYPE html><html><body><pre id="status">pending</pre>
<iframe id="page" src="{src}" width="1200" height="800"></iframe>
<script>
const f = document.getElementById('page');
f.addEventListener('load', () => {{
  const doc = f.contentDocument;
  const imgs = doc ? Array.from(doc.images).map(i => ({{src: i.getAttribute('src'), complete: i.complete,
                                                        width: i.naturalWidth}})) : null;
  document.getElementById('status').textContent = JSON.stringify(imgs);
}});
</script></body></html>
"""


def find_browser() -> str | None:
    return next((b for b in map(shutil.which, BROWSERS) if b), None)


def image_status(page: Path, browser: str, timeout: float = 60.0) -> list[dict]:
    """``[{"src", "complete", "width"}]`` for every ``<img>`` of ``page`` once it loaded in Chromium.

    Raises:
        RuntimeError: the browser failed or the harness never saw the page load.
    """
    page = Path(page).resolve()
    harness = page.with_name(f".imgcheck_{page.stem}.html")
    harness.write_text(_HARNESS.format(src=page.name))
    try:
        r = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
                            "--virtual-time-budget=10000", "--dump-dom", harness.as_uri()],
                           capture_output=True, text=True, timeout=timeout)
    finally:
        harness.unlink()
    m = re.search(r'<pre id="status">(.*?)</pre>', r.stdout, re.S)
    if r.returncode != 0 or not m or m.group(1) in ("pending", "null"):
        raise RuntimeError(f"{browser} did not render {page} (exit {r.returncode}): {r.stderr[-2000:]}")
    return json.loads(html.unescape(m.group(1)))
