"""A static HTML page that opens from disk: sections of figures (relative paths) and tables."""

from __future__ import annotations

import html
import os
from pathlib import Path

from ..atomic_io import write_text_atomic

CSS = """
body { font-family: system-ui, -apple-system, Segoe UI, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
figure { margin: 1em 0; } figcaption { font-size: .9em; color: #555; }
img { max-width: 100%; border: 1px solid #eee; }
table { border-collapse: collapse; font-size: .85em; } td, th { border: 1px solid #ddd; padding: .2em .5em; }
.summary { color: #444; }
"""


def render(title: str, sections: list[dict], out: Path) -> Path:
    """Write ``out/index.html``. A section: title, summary, figures [(caption, path)], tables [(caption, html)].
    Figure paths are made relative to ``out`` so the folder can be moved or zipped."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    for sec in sections:
        parts.append(f"<section><h2>{html.escape(sec['title'])}</h2>")
        if sec.get("summary"):
            parts.append(f"<p class='summary'>{html.escape(sec['summary'])}</p>")
        for caption, path in sec.get("figures", []):
            rel = os.path.relpath(path, out)
            parts.append(f"<figure><img src='{html.escape(rel)}' alt='{html.escape(caption)}'>"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        for caption, table_html in sec.get("tables", []):
            parts.append(f"<h3>{html.escape(caption)}</h3>{table_html}")
        parts.append("</section>")
    # Marks the page once every image has loaded or failed: headless browsers (and the test suite)
    # read data-broken-images from the DOM to prove the page is complete.
    parts.append("<script>window.addEventListener('load', function () {"
                 "var n = 0; document.querySelectorAll('img').forEach(function (i) {"
                 " if (!i.complete || i.naturalWidth === 0) { n += 1; } });"
                 " document.body.setAttribute('data-broken-images', String(n)); });</script>")
    parts.append("</body></html>")
    return write_text_atomic(out / "index.html", "\n".join(parts))
