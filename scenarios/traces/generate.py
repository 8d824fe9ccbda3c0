#!/usr/bin/env python3
"""Writes cellular-variable.down: a synthetic mahimahi packet-delivery trace.

The rate follows a seeded random walk between 2 and 40 Mbit/s, a new value every 500 ms,
over a 10-second period (mahimahi repeats a trace after its last line). Each line is the
millisecond of one 1500-byte delivery opportunity, as mahimahi's LinkQueue reads it.
It stands in for a measured LTE trace (mahimahi ships several; they are not copied here).

    python3 scenarios/traces/generate.py > scenarios/traces/cellular-variable.down
"""
import random

random.seed(20261123)
rate = 20.0  # Mbit/s
credit = 0.0
lines = []
for ms in range(1, 10_001):
    if ms % 500 == 1:
        rate = min(40.0, max(2.0, rate + random.uniform(-8.0, 8.0)))
    credit += rate * 1e6 / 8 / 1000 / 1500  # opportunities this millisecond
    while credit >= 1.0:
        lines.append(ms)
        credit -= 1.0
if lines[-1] != 10_000:
    lines.append(10_000)
print("\n".join(str(x) for x in lines))
