"""Running a compiled network: CompiledNet and what it stands on.

Takes a backend's executor and a network's Signature; gives CompiledNet (net.py), which
checks every array a call is given (checks.py) before the executor sees it, draws initial
params (initializers.py) and state, and shows itself in Jupyter (summary.py). The disk cache
of compiled networks (cache.py) lives here too. Nothing here needs SymPy: a network opened
from the cache runs without it.
"""
