"""What the result files say: `list`/`show` overviews, `status`, `collect`'s tables, and the
figures `plot` draws (:mod:`.figures`).

Functions of files: nothing here trains or evaluates. The figures read the analyses' data
files; they compute only what needs no run (the paper's equations, Fig. 5c's assignment pass).
"""
