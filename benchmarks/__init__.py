"""Side-by-side benchmarks of coroexecutor against its peers (``python -m benchmarks``).

Modules:

* ``_contenders``: every contender of every workload, as a plain function a child
  process (or the smoke test) calls once;
* ``_child``: runs one contender once in a fresh process and prints one JSON line;
* ``_runner``: plans the runs, interleaves them, checks job counts, aggregates;
* ``_report``: the Markdown table, the reStructuredText page and the bar chart;
* ``bench_bridge``: the sync-bridge workloads (written separately).
"""
