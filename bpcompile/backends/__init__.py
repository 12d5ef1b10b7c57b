"""The backends: the graph the driver hands each one, printed as code it runs.

Takes a Compiled network (after the backend's own pass list, passes/__init__.py) and its
Signature; gives an executor whose entry points (forward, loss, value_and_grad, step,
apply_gradients) CompiledNet calls. `numpy/` prints a readable standalone module; `llvm/`
prints LLVM IR compiled for the host CPU. Both print the same graph, so each is a check on
the other.
"""
