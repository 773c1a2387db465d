"""SmartPop benchmarks (issue 6): throughput, memory, many accounts, IMAP IDLE latency.

Not tests: nothing here asserts; every module prints figures for the README.
"""
