# Copyright: Nixie developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mutation fuzzer both DHCP pipelines' fuzz tests run: seeded, so a failure reproduces from its case number."""

from __future__ import annotations

import random

import pytest

FUZZ_PACKETS = 100_000
PATHS = ("malformed", "not a request", "unanswered", "reply")


class MutationFuzzer:
    """Mutates real packets with the mutations every binary protocol shares, plus each test's own."""

    @staticmethod
    def flip_bits(rng, data):
        data = bytearray(data)
        for dummy in range(rng.randint(1, 8)):
            position = rng.randrange(len(data))
            data[position] ^= 1 << rng.randrange(8)
        return bytes(data)

    @staticmethod
    def truncate(rng, data):
        return data[:rng.randrange(len(data))]

    @staticmethod
    def extend(rng, data):
        return data + rng.randbytes(rng.randint(1, 600))

    def run(self, seed, seeds, own_mutations, sources, check):
        """Feed FUZZ_PACKETS mutated ``seeds`` from random ``sources`` to ``check(data, source, local_port)``.

        ``check`` returns which of PATHS the input took; every path must be taken often, or the test proves nothing.
        """
        mutations = (self.flip_bits, self.flip_bits, self.truncate, self.extend) + tuple(own_mutations)
        rng = random.Random(seed)
        tally = dict.fromkeys(PATHS, 0)
        for case in range(FUZZ_PACKETS):
            data = rng.choice(mutations)(rng, rng.choice(seeds))
            source, local_port = rng.choice(sources)
            try:
                tally[check(data, source, local_port)] += 1
            except Exception as exc:  # report the reproducible case, then fail with the original error
                raise AssertionError("case %d (seed %d): %r raised %r" % (case, seed, data, exc)) from exc
        assert sum(tally.values()) == FUZZ_PACKETS
        assert min(tally.values()) > FUZZ_PACKETS // 50, tally


@pytest.fixture
def fuzzer():
    return MutationFuzzer()
