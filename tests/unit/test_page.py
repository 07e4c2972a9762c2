"""``report.html``: one static page of a kept run (issue 18 item 3)."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

from dmanchor.scenario import callflow, page
from tests.unit.test_callflow import MOVES, NAMES, RECORDS

HOSTILE = "<script>alert(1)</script>"
"""A check name no page may run (names come from scenario files)."""


def kept_run(directory: Path, failures: list[str] | None = None) -> Path:
    """A run's ``--out`` directory: report, node traces, a diagram, a plot."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = {
        "scenario": "4.1.2", "title": "kept across a move", "moves": MOVES,
        "flows": [{"name": "probe", "kind": "udp", "address_state": "kept", "sent": 2000,
                   "received": 2000, "lost": 0, "duplicates": 0, "reordered": 0,
                   "charged": 2000, "moves": [{"move": "ar1->ar2", "interruption_ms": 6.9,
                                               "attach_to_first_ms": 5.2}]}],
        "checks": {"ar1 sends probe's prefix towards ar2": True, HOSTILE: True},
        "failures": failures or [],
        "signalling": {"BUFFER_READY": {"messages": 2, "bytes": 180}},
        "breakdown": [{"mn": "mn", "move": "ar1->ar2", "radio": 0.6, "attach": 2.1,
                       "lm": 3.0, "fm": 4.0, "lift": 5.0, "first": 5.2}],
        "faults": [],
    }
    (directory / "report.json").write_text(json.dumps(report))
    (directory / "nodes.json").write_text(json.dumps(NAMES))
    (directory / "ar.trace.jsonl").write_text("\n".join(json.dumps(r) for r in RECORDS))
    callflow.write(directory)
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.plot([0, 1, 2], [2, 0, 2])
    fig.savefig(directory / "flow-probe.png", dpi=60)
    plt.close(fig)
    return directory


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.open: list[str] = []
        self.seen: list[str] = []
        self.unbalanced = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append(tag)
        if tag in ("table", "tr", "td", "th", "figure", "h1", "h2"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("table", "tr", "td", "th", "figure", "h1", "h2") and (
                not self.open or self.open.pop() != tag):
            self.unbalanced += 1


def test_the_page_holds_the_tables_the_diagram_and_the_plot(tmp_path: Path) -> None:
    path = page.write(kept_run(tmp_path))
    text = path.read_text()
    tags = _Tags()
    tags.feed(text)
    assert tags.unbalanced == 0 and not tags.open
    assert tags.seen.count("svg") == 1 and tags.seen.count("img") == 1
    assert "data:image/png;base64," in text and "passed" in text
    assert "ar1-&gt;ar2: 6.9 ms" in text and "BUFFER_READY" in text
    # Nothing from the report becomes markup, and the page runs no script.
    assert "script" not in tags.seen and "&lt;script&gt;" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")


def test_a_failed_run_says_so_at_the_top(tmp_path: Path) -> None:
    text = page.write(kept_run(tmp_path, ["probe: lost 3 (expected 0)"])).read_text()
    head = text[text.index("<h1>"):text.index("</h1>")]
    assert "FAILED" in head
    assert "probe: lost 3 (expected 0)" in text
