"""The one table `make bench` prints (Markdown, so the same text is the committed results file)."""

from __future__ import annotations

import datetime
import os
import platform


def _number(value):
    if value is None:
        return "—"
    if value == 0 or abs(value) >= 100:
        return "%.0f" % value
    return "%.3g" % value


def render(rows, smoke, parts, seconds):
    lines = [
        "# Nixie benchmarks%s" % (" (smoke)" if smoke else ""),
        "",
        "%s, %d cores (%s), %s; parts %s; %.0f s. Ratio = Nixie / reference (dnsmasq proxy-DHCP + TFTP, nginx)."
        % (datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), os.cpu_count(), platform.processor() or platform.machine(),
           platform.platform(terse=True), ",".join(parts), seconds),
        "",
        "| part | figure | Nixie | reference | unit | ratio | better | target | met |",
        "|---|---|---:|---:|---|---:|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            row.part, row.figure, _number(row.nixie), _number(row.reference), row.unit,
            "%.2f" % row.ratio if row.ratio is not None else "—", row.better, row.target, met))
    return "\n".join(lines) + "\n"
