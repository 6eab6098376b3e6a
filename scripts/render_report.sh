#!/usr/bin/env bash
# Renders a training report (secondo report DIR) in headless Chromium: writes
# a screenshot and fails (exit 1) when the page logs anything to the console
# (it has no script, so any message is an error or a blocked load), requests
# anything beyond its own file, or has a panel that draws nothing.
#
#   scripts/render_report.sh REPORT.html OUT.png
set -euo pipefail
if [ $# -ne 2 ]; then
    echo "usage: $0 REPORT.html OUT.png" >&2
    exit 2
fi
report=$(realpath "$1")
out=$2
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "render_report: no chromium found (apt-get install chromium)" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# No sandbox (CI runs as root), no GPU; every host name fails to resolve, so
# a reference to the network shows up as a failed load on the console.
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --no-first-run
       --host-resolver-rules="MAP * ~NOTFOUND" --user-data-dir="$work/profile"
       --enable-logging=stderr --v=0)
"$browser" "${flags[@]}" --log-net-log="$work/net.json" --dump-dom "file://$report" \
    >"$work/dom.html" 2>"$work/dom.log"

# The page as the browser built it: every panel must hold a drawn mark, and
# the page must have requested nothing beyond its file (the browser's own
# requests have no origin; the file's have the opaque origin "null").
# Prints the window height that fits the page (three panels a row).
height=$(python3 - "$work/dom.html" "$work/net.json" <<'PY'
import json
import sys
from html.parser import HTMLParser

events = json.load(open(sys.argv[2], encoding="utf-8"))["events"]
fetched = sorted({e["params"]["url"] for e in events
                  if "url" in e.get("params", {})
                  and e["params"].get("initiator", "not an origin") != "not an origin"
                  and not e["params"]["url"].startswith("file:")})
if fetched:
    sys.exit(f"render_report: the page requested {fetched}")

class Panels(HTMLParser):
    def __init__(self):
        super().__init__()
        self.depth = 0          # open divs inside the current panel
        self.panels = []        # [data-instrument, marks]
        self.sections = []      # panels per section
    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(0)
        if tag == "div" and self.depth:
            self.depth += 1
        elif tag == "div" and a.get("class") == "panel":
            self.depth = 1
            self.panels.append([a.get("data-instrument", "?"), 0])
            if self.sections:
                self.sections[-1] += 1
        elif self.depth and (tag in ("polyline", "circle") or (tag == "rect" and a.get("class") in ("bar", "cell"))):
            self.panels[-1][1] += 1
    def handle_endtag(self, tag):
        if tag == "div" and self.depth:
            self.depth -= 1

p = Panels()
p.feed(open(sys.argv[1], encoding="utf-8").read())
empty = [name for name, marks in p.panels if marks == 0]
if not p.panels or empty:
    sys.exit(f"render_report: panels without drawn marks: {empty or 'no panels at all'}")
rows = sum((n + 2) // 3 for n in p.sections)
print(200 + 500 * rows)
PY
)
"$browser" "${flags[@]}" --window-size="1500,$height" --screenshot="$out" "file://$report" \
    >/dev/null 2>"$work/shot.log"
if grep -h "CONSOLE" "$work/dom.log" "$work/shot.log"; then
    echo "render_report: the page logged to the console (above)" >&2
    exit 1
fi
if [ ! -s "$out" ]; then
    echo "render_report: no screenshot written" >&2
    exit 1
fi
echo "rendered $1 to $out (1500x$height)"
