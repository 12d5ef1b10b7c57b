"""The LLVM backend: the optimized graph printed as LLVM IR with llvmlite, compiled for the
host CPU, and called as one native function per entry point.

    codegen.py   graph -> IR module (forward, loss, value_and_grad, step)
    expr.py      SymPy expressions -> IR, elementwise
    mathlib.py   exp, log, tanh, ... as plain arithmetic, so loops vectorize
    kernels.py   reductions, softmax family, transposes
    matmul.py    register-blocked matmul, or BLAS for large shapes
    jit.py       target machine, O3 pipeline, execution engine, disk cache
    runtime.py   the executor: workspace, the native fast path, the checked slow path
"""
