"""Nixie's benchmarks: the boot server measured side by side with dnsmasq and nginx, as ratios.

Run from the repository root as root: ``python -m bench`` (about 15 minutes, with lab VMs) or
``python -m bench --smoke`` (tiny sizes, one repetition, no VMs; under 2 minutes). See README.md.
"""
