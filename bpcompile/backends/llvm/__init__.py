"""The LLVM backend: the graph the driver hands it (after the backend's own passes) printed
as LLVM IR with llvmlite, compiled for the host CPU, and called as one native function per
entry point. Takes a Compiled network and its Signature; gives an executor for CompiledNet.

    codegen.py    graph -> IR module: one entry function per entry point
    entry.py      one entry function: where each node's values live, in what order
    ops.py        the IR of each op inside an entry function
    layout.py     the pointer table entry functions read
    expr.py       SymPy expressions -> IR, elementwise
    mathlib.py    exp, log, tanh, ... as plain arithmetic, so loops vectorize
    kernels.py    one function per distinct loop nest, shared by the entry points
    axis.py       loop nests along one axis: reductions, softmax family, transposes
    rows.py       short rows (softmax family, cross-entropy) several at a time
    matmul.py     register-blocked matmul, or BLAS for large shapes
    products.py   the prebuilt function that picks, when it runs, how a product is computed
    dot.py        A @ B.T as dot products along k
    moves.py      strided copies (slices, joins, gathers) and the batched matmul
    convolution.py  each convolution's path (direct, or im2col and a product) and pooling
    windows.py    im2col and col2im, and the helpers of the window kernels
    pooling.py    max and average pooling and their gradients
    direct.py     direct convolutions for layers with small windows
    prebuilt.py   kernels no network shapes, compiled once per machine
    threads.py    the process's pool of native worker threads
    tasks.py      the tasks a network hands the pool
    split.py      kernel calls whose work divides over the pool
    fastcall.py   the native fast path of step: checks arrays without Python
    fastbind.py   its walks over a network's arrays, table-driven, in the prebuilt library
    jit.py        target machine, O3 pipeline, execution engine
    executor.py   the executor: workspaces, the fast path, the checked slow path
    describe.py   the IR behind a gradient, for `bpcompile show`
"""
