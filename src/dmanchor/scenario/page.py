"""``DIR/report.html``: one static page of a run kept by ``--out DIR``.

The report's tables (flows and their moves, where each move's time went,
faults, checks, signalling), then every call-flow diagram and every plot of
the directory.  Self-contained: the SVG diagrams are inlined, the PNG plots
embedded as data URIs, the style is in the page - no JavaScript, nothing
fetched - so the file can be mailed or attached to a ticket and opens
anywhere.  Everything taken from the report is HTML-escaped.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path
from typing import Any

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: .5em 0; } caption { text-align: left; color: #555; }
th, td { border: 1px solid #ccc; padding: .2em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.pass { color: #060; font-weight: bold; } .fail { color: #b00; font-weight: bold; }
figure { margin: 1em 0; } figure svg, figure img { max-width: 100%; height: auto; }
figcaption { color: #555; }
"""


def _table(head: Sequence[str], rows: Iterable[Sequence[Any]], caption: str = "") -> str:
    out = ["<table>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>")
    for row in rows:
        cells = []
        for v in row:
            numeric = isinstance(v, int | float) and not isinstance(v, bool)
            text = "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v))
            cells.append(f'<td class="n">{escape(text)}</td>' if numeric
                         else f"<td>{escape(text)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def _flows(report: dict[str, Any]) -> str:
    rows = []
    for f in report.get("flows", []):
        moves = "; ".join(f"{m['move']}: {m['interruption_ms']:g} ms" for m in f.get("moves", []))
        rows.append((f["name"], f["kind"], f.get("address_state", "-"), f["sent"],
                     f["received"], f["lost"], f["duplicates"], f["reordered"],
                     f.get("charged"), moves or "-"))
    return _table(("flow", "kind", "address", "sent", "received", "lost", "duplicates",
                   "reordered", "charged", "interruption per move"), rows)


def _breakdown(report: dict[str, Any]) -> str:
    rows = report.get("breakdown") or []
    if not rows:
        return ""
    keys = [k for k in rows[0] if k not in ("mn", "move")]
    return _table(("MN", "move", *(f"{k} (ms)" for k in keys)),
                  [(b["mn"], b["move"], *(b.get(k) for k in keys)) for b in rows],
                  "where each move's time went, from the radio's move")


def _faults(report: dict[str, Any]) -> str:
    rows = report.get("faults") or []
    if not rows:
        return ""
    return _table(("fault", "at (s)", "recovery", "settled after (s)", "left"),
                  [(r.get("fault"), round(r.get("at") or 0, 3), r.get("recovered"),
                    r.get("converged_s"), r.get("last_stale") or "-") for r in rows])


def _checks(report: dict[str, Any]) -> str:
    rows = [(name, "passed" if ok else "FAILED") for name, ok in report.get("checks", {}).items()]
    rows += [(text, "FAILED") for text in report.get("failures", [])
             if not text.startswith("check failed: ")]
    return _table(("expectation or check", "result"), rows) if rows else "<p>none</p>"


def _signalling(report: dict[str, Any]) -> str:
    sig = report.get("signalling", {})
    return _table(("message", "sent", "bytes"),
                  [(t, v.get("messages", 0), v.get("bytes", 0)) for t, v in sorted(sig.items())])


def _number(path: Path) -> tuple[int, str]:
    m = re.search(r"(\d+)", path.stem)
    return (int(m.group(1)) if m else 0, path.name)


def _figures(directory: Path) -> str:
    out = []
    for svg in sorted(directory.glob("callflow-*.svg"), key=_number):
        text = svg.read_text()
        text = re.sub(r"^<\?xml[^>]*\?>\s*", "", text)  # (inline: no XML declaration)
        out.append(f"<figure>{text}<figcaption>{escape(svg.name)}</figcaption></figure>")
    for png in sorted(directory.glob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode()
        out.append(f'<figure><img alt="{escape(png.stem)}" src="data:image/png;base64,{data}">'
                   f"<figcaption>{escape(png.name)}</figcaption></figure>")
    return "\n".join(out) or "<p>none (plots: <code>--plots</code>)</p>"


def write(directory: Path) -> Path:
    """Write ``directory/report.html`` from what the run kept there."""
    report = json.loads((directory / "report.json").read_text())
    passed = not report.get("failures")
    verdict = ('<span class="pass">passed</span>' if passed
               else '<span class="fail">FAILED</span>')
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>dmanchor {escape(str(report.get('scenario', '')))}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{escape(str(report.get('scenario', '')))}: "
        f"{escape(str(report.get('title', '')))} - {verdict}</h1>",
        "<h2>Flows</h2>", _flows(report),
    ]
    for title, body in (("Where the time went", _breakdown(report)),
                        ("Faults", _faults(report))):
        if body:
            parts += [f"<h2>{title}</h2>", body]
    parts += ["<h2>Expectations and checks</h2>", _checks(report),
              "<h2>Signalling</h2>", _signalling(report),
              "<h2>Call flows and plots</h2>", _figures(directory), "</body></html>"]
    path = directory / "report.html"
    path.write_text("\n".join(parts))
    return path
