#!/usr/bin/env python3
"""Checks a page's DOM as headless Chromium parsed it (chromium --dump-dom) for its charts.

Usage: svg_dom_check.py DOM_FILE ID...  (or @FILE: one id a line)
Every id must name exactly one <svg> element, not nested in another <svg> (an unclosed
element upstream would nest them), with something drawn in it (rect, polyline, circle, line
or path). Exit 0 when all hold; else 1, naming each id that failed."""
import sys
from html.parser import HTMLParser

DRAWN = {"rect", "polyline", "circle", "line", "path"}
# Void elements never get an end tag in the dump; SVG children are written closed.
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}


class Svgs(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack = []  # open elements: [tag, svg id or None]
        self.found = {}  # id -> {"count", "nested", "drawn"}

    def open_svg(self):
        for tag, sid in reversed(self.stack):
            if tag == "svg":
                return sid
        return None

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            sid = dict(attrs).get("id")
            if sid is not None:
                f = self.found.setdefault(sid, {"count": 0, "nested": False, "drawn": 0})
                f["count"] += 1
                f["nested"] |= any(t == "svg" for t, _ in self.stack)
            self.stack.append([tag, sid])
            return
        if tag in DRAWN:
            sid = self.open_svg()
            if sid is not None:
                self.found[sid]["drawn"] += 1
        if tag not in VOID:
            self.stack.append([tag, None])

    def handle_startendtag(self, tag, attrs):
        if tag in DRAWN:
            sid = self.open_svg()
            if sid is not None:
                self.found[sid]["drawn"] += 1

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                return


def main():
    dom, args = sys.argv[1], sys.argv[2:]
    ids = []
    for a in args:
        if a.startswith("@"):
            ids += [line.strip() for line in open(a[1:]) if line.strip()]
        else:
            ids.append(a)
    p = Svgs()
    p.feed(open(dom, encoding="utf-8").read())
    bad = 0
    for sid in ids:
        f = p.found.get(sid)
        if not f or f["count"] != 1 or f["nested"] or f["drawn"] == 0:
            print(f"FAIL chart {sid}: {f or 'absent'}")
            bad += 1
    svgs = sum(f["count"] for f in p.found.values())
    print(f"{len(ids) - bad} of {len(ids)} charts found and drawn; {svgs} <svg> with ids in the DOM")
    return 1 if bad or not ids else 0


if __name__ == "__main__":
    sys.exit(main())
