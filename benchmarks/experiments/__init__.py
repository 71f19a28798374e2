"""One-off measurements quoted in docs/internals.rst ("Appendix: performance notes").

Each runs in one process, interleaving its variants, and prints a small table:

* ``python -m benchmarks.experiments.ladder``: where coroexecutor's per-job time goes;
* ``python -m benchmarks.experiments.completion``: done callback vs in-line completion
  (run it under several Pythons: the eager-start variant needs 3.12+);
* ``python -m benchmarks.experiments.awaits``: worker-task pools vs a Task per job as
  jobs await more often.
* ``python -m benchmarks.experiments.gctime``: how much of the time per job each design
  spends in the cyclic garbage collector (child process per run).
"""
