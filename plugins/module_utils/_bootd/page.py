# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The status page and the report, as HTML: one renderer for both, from ``state.progress`` rows. Pure: no I/O.

The document is whole in itself (inline style, no font, no CDN, no framework), so it works on an air-gapped
network and the report opens from disk. The live page's only script swaps in the table the server renders
for each update (server-sent events): the browser never builds a row, so what it shows is what a reload shows.
Without JavaScript, the page refreshes itself every few seconds instead.
"""

from __future__ import annotations

import html
import json
import time
from typing import Any, Callable, Iterable, Mapping, Optional

from ansible_collections.nixie.provision.plugins.module_utils._bootd.state.progress import MEANINGS, STATES

FLEET_ID = "fleet"
# How often a browser without JavaScript reloads the live page.
NOSCRIPT_REFRESH_SECONDS = 5

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.3em;margin:0 0 .3em}.meta{color:#666;font-size:.9em;margin-bottom:1em}
table{border-collapse:collapse;width:100%;background:#fff}th,td{border:1px solid #ddd;padding:.35em .5em;text-align:left;vertical-align:top}
th{background:#eee;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.state{display:inline-block;padding:.1em .5em;border-radius:.8em;background:#e3e8ef;font-weight:600}
.state-installed{background:#c8ecc9}.state-failed{background:#f6c6c6}.state-skipped{background:#e6e6e6;color:#555}
.state-installing,.state-rebooting{background:#fde9b8}.error{color:#a11;max-width:30em;word-break:break-word}
progress{width:10em;vertical-align:middle}.small{font-size:.85em;color:#555}dl{margin:0}dt{font-weight:600;margin-top:.4em}
ol.timeline{margin:.2em 0;padding-left:1.4em}
"""

_LIVE_SCRIPT = """(function(){if(!window.EventSource)return;var s=new EventSource(%s);
s.onmessage=function(m){var d=JSON.parse(m.data),f=document.getElementById(%s);if(f)f.outerHTML=d.html;
var u=document.getElementById("updated");if(u)u.textContent=d.updated;document.body.setAttribute("data-updates",
String(1+Number(document.body.getAttribute("data-updates")||0)));};})();"""


def _seconds(value: Optional[float]) -> str:
    if value is None:
        return ""
    if value < 60:
        return "%.1f s" % value
    minutes, seconds = divmod(int(round(value)), 60)
    return "%d min %02d s" % (minutes, seconds) if minutes < 60 else "%d h %02d min" % divmod(minutes, 60)


def _bytes(value: Optional[float]) -> str:
    if value is None:
        return "?"
    for unit, size in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if value >= size:
            return "%.1f %s" % (value / size, unit)
    return "%d B" % value


def clock(ts: Optional[float]) -> str:
    """``ts`` (seconds since the epoch) as UTC wall-clock time, ``2026-12-02 03:16:22 UTC``."""
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts is not None else ""


def _transfer(transfer: Optional[Mapping[str, Any]]) -> str:
    if not transfer:
        return ""
    size, sent = transfer.get("size"), transfer.get("bytes") or 0
    rate = transfer.get("rate")
    progress_bar = '<progress value="%d" max="%d"></progress> ' % (sent, size) if size else ""
    text = "%s of %s" % (_bytes(sent), _bytes(size)) + (", %s/s" % _bytes(rate) if rate else "")
    return progress_bar + '<span class="small">%s%s</span>' % (html.escape(text), "" if not transfer.get("complete") else ", done")


def _durations(durations: Mapping[str, float]) -> str:
    return "<br>".join('<span class="small">%s</span> %s' % (html.escape(state), _seconds(seconds)) for state, seconds in durations.items())


def _row(row: Mapping[str, Any], log_href: Callable[[Mapping[str, Any]], Optional[str]]) -> str:
    state = row["state"]
    phase = ' <span class="small">(%s)</span>' % html.escape(row["phase"]) if row.get("phase") and state == "installing" else ""
    href = log_href(row)
    log = '<a href="%s">install log</a>' % html.escape(href) if href else ""
    cells = (
        '<td>%s<br><span class="small">%s</span></td>' % (html.escape(row["host"]), html.escape(row["mac"])),
        '<td><span class="state state-%s">%s</span>%s</td>' % (html.escape(state), html.escape(state), phase),
        '<td class="num">%s</td>' % _seconds(row.get("seconds_in_state")),
        "<td>%s</td>" % _durations(row.get("durations") or {}),
        "<td>%s</td>" % html.escape(row.get("address") or ""),
        "<td>%s</td>" % html.escape(row.get("power") or ""),
        "<td>%s</td>" % _transfer(row.get("transfer")),
        '<td class="error">%s</td>' % html.escape(row.get("last_error") or ""),
        "<td>%s</td>" % log,
    )
    return '<tr data-host="%s" data-state="%s">%s</tr>' % (html.escape(row["host"]), html.escape(state), "".join(cells))


def _timelines(rows: Iterable[Mapping[str, Any]]) -> str:
    parts = ["<h2>Timelines</h2><dl>"]
    for row in rows:
        steps = row.get("timeline") or []
        items = "".join("<li>%s: %s <span class=\"small\">(%s, +%s)</span></li>" % (
            html.escape(clock(entry["ts"])), html.escape(entry["state"]), html.escape(entry["step"]),
            _seconds(entry["ts"] - steps[0]["ts"])) for entry in steps)
        parts.append("<dt>%s</dt><dd><ol class=\"timeline\">%s</ol></dd>" % (html.escape(row["host"]), items or "<li>no events</li>"))
    parts.append("</dl>")
    return "".join(parts)


def _totals(totals: Mapping[str, Any]) -> str:
    states = ", ".join("%d %s" % (count, html.escape(state)) for state, count in sorted(totals["states"].items()))
    return '<p class="meta">%d hosts: %s. Initrd sent: %s. From first event to last: %s.</p>' % (
        totals["hosts"], states or "none", _bytes(totals["initrd_bytes"]), _seconds(totals["seconds"]))


def render_fleet(rows: Iterable[Mapping[str, Any]], totals: Mapping[str, Any],
                 log_href: Callable[[Mapping[str, Any]], Optional[str]] = lambda row: None) -> str:
    """The part of the page that updates: the totals and one table row per host."""
    header = "".join("<th>%s</th>" % name for name in (
        "Host", "State", "In state", "Time per state", "Address", "Power", "Initrd", "Last error", "Log"))
    body = "".join(_row(row, log_href) for row in rows)
    return '<div id="%s">%s<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table></div>' % (FLEET_ID, _totals(totals), header, body)


def render_document(rows: Iterable[Mapping[str, Any]], totals: Mapping[str, Any], *, title: str, generated: float,
                    stream_url: Optional[str] = None, script_nonce: Optional[str] = None, timelines: bool = False,
                    log_href: Callable[[Mapping[str, Any]], Optional[str]] = lambda row: None) -> str:
    """A whole HTML document: live (``stream_url`` and the ``script_nonce`` its CSP allows) or frozen (the report)."""
    rows = list(rows)
    live = stream_url is not None
    head = ['<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            "<title>%s</title><style>%s</style>" % (html.escape(title), _STYLE)]
    if live:
        head.append('<noscript><meta http-equiv="refresh" content="%d"></noscript>' % NOSCRIPT_REFRESH_SECONDS)
    legend = "".join("<li><b>%s</b>: %s</li>" % (state, html.escape(MEANINGS[state])) for state in STATES)
    body = [
        "</head><body data-updates=\"0\"><h1>%s</h1>" % html.escape(title),
        '<div class="meta">%s <span id="updated">%s</span></div>' % ("Live; updated" if live else "Report written", html.escape(clock(generated))),
        render_fleet(rows, totals, log_href),
        _timelines(rows) if timelines else "",
        '<details><summary class="small">What the states mean</summary><ul class="small">%s</ul></details>' % legend,
    ]
    if live:
        # json.dumps then escaping "<" keeps a "</script>" in an argument from closing the element.
        body.append('<script nonce="%s">%s</script>' % (html.escape(script_nonce or ""), _LIVE_SCRIPT % (
            json.dumps(stream_url).replace("<", "\\u003c"), json.dumps(FLEET_ID))))
    body.append("</body></html>")
    return "".join(head + body)
