"""The NumPy backend: the training graph printed as a readable, standalone Python module
that needs only NumPy, and the executor that runs it.

Takes a Compiled network; gives the module's source (module.py, statements.py, lines.py,
helpers.py) and an executor for CompiledNet (executor.py). The source is kept in the disk
cache, so a network compiled before opens without SymPy.
"""
