"""bench/nixcost.py's accounting (P7): which nix calls evaluate, and the peak RSS of the ones that ran at once."""

import pytest

from bench.nixcost import evaluates, peak_concurrent_rss

FEATURES = ["--extra-experimental-features", "nix-command flakes"]


@pytest.mark.parametrize("argv, expected", [
    (FEATURES + ["eval", "--json", "path:/f#nixosConfigurations", "--apply", "root: root"], True),
    (FEATURES + ["build", "--json", "--no-link", "path:/f#nixosConfigurations.a.config.system.build.toplevel"], True),
    # The one build of the run: derivations, evaluated already.
    (FEATURES + ["build", "--no-link", "--keep-going", "--print-build-logs", "/nix/store/a-x.drv", "/nix/store/b-y.drv^*"], False),
    (["--version"], False),
    (FEATURES + ["store", "delete", "/nix/store/a-x"], False),
])
def test_evaluates(argv, expected):
    assert evaluates(argv) is expected


def test_peak_concurrent_rss_sums_the_processes_running_together():
    calls = [{"start": 0, "end": 10, "maxrss_kib": 100}, {"start": 1, "end": 2, "maxrss_kib": 50}, {"start": 5, "end": 6, "maxrss_kib": 70},
             {"start": 10, "end": 11, "maxrss_kib": 60}]
    # 0-10 with 5-6 is the largest pair; the one starting as the first ends does not overlap it.
    assert peak_concurrent_rss(calls) == 170 * 1024
    assert peak_concurrent_rss([]) == 0
