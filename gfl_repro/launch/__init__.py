"""How runs reach a machine: the plan of an invocation, the launchers (inline, local, Slurm),
the job every launcher runs, and each run's job state (``job.json``).

:func:`gfl_repro.launch.run.run` is the launch sequence `gfl-repro run` calls.
"""
