"""chkpt in Jupyter and IPython: a kernel's user namespace checkpointed between cells, and put
back after the kernel's death (`restore`) or as it was after any cell (`checkout`).

startup.py (loading into a kernel, from the autoload), kernel.py (the driver: IPython's cell
events → checkpoints), cells.py (a run's cells: which checkpoint holds which cell's state, which
cell defined a name), restore.py (putting a checkpoint back into a namespace) and commands.py
(`chkpt.restore`, `chkpt.checkout`, `%chkpt`). docs/notebooks.md is the user's guide.
"""
