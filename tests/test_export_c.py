"""`export --to c`: the C library, built with the system's C compiler into a program this
file writes, against the same network run in Python. The oracle is Python's `net.step`,
`value_and_grad` and `forward` on the same params, data and dropout seed: losses, params,
buffers, gradients and outputs agree to 1e-12 in float64 after many steps. Skipped where
there is no `cc`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, calls_dot_products

import bpcompile as bpc
from bpcompile.backends.llvm import gemm
from bpcompile.export import c_library
from bpcompile.export.c_abi import c_arrays, c_sizes
from bpcompile.runtime.net import CompiledNet

CC = shutil.which("cc")
pytestmark = pytest.mark.skipif(CC is None, reason="no C compiler (cc) on this machine")

# The C library and the C math library: all an exported object may ask the linker for.
LIBC = {"aligned_alloc", "free", "malloc", "memcpy", "memmove", "memset", "strcmp"}
LIBM = {"exp", "expf", "log", "logf", "log1p", "log1pf", "expm1", "expm1f", "tanh", "tanhf",
        "pow", "powf", "sqrt", "sqrtf", "fabs", "fabsf", "sin", "sinf", "cos", "cosf",
        "erf", "erff", "atan", "atanf", "fmax", "fmaxf", "fmin", "fminf", "floor", "floorf",
        "ceil", "ceilf", "round", "roundf", "trunc", "truncf"}

# A small classifier with every mode-dependent op: batch norm (running statistics in
# inference, a buffer that step updates) and dropout (masks drawn from the step count),
# Adam with a warmup-cosine schedule: the state the C step must carry exactly as Python.
MODAL = """
network modal
input  x[N, 6]
target t[N, 3]
z1 = dense(x, 8)
h1 = batchnorm(z1)
y = dense(dropout(relu(h1), 0.4), 3)
output y
loss cross_entropy(y, t)
optimize adam(lr=0.05, schedule=[warmup(3), cosine(40, min_lr=0.001)])
"""

# Class indices as the target: the C side passes them as numbers and must refuse one that
# is not a whole number in [0, classes).
INDICES = """
network indices
input  x[N, 4]
target t[N]
h = dense(x, 5, act=tanh)
y = dense(h, 3)
output y
loss cross_entropy(y, t)
optimize sgd(lr=0.2, momentum=0.9)
"""


def c_literal(array: np.ndarray) -> str:
    return ", ".join(repr(float(v)) for v in np.asarray(array, dtype=np.float64).ravel())


class Program:
    """A C program, written from the network's signature, that runs the exported library:
    `steps` calls of NET_step on one batch (printing each status and loss), value_and_grad
    (every trained param's gradient), every param and buffer by name, then forward on the
    batch's inputs. Its output parsed: 'step' the list of (status, loss), and an array for
    'grad:NAME', 'param:NAME' and 'output:NAME'."""

    def __init__(self, net: CompiledNet, batch: Mapping[str, np.ndarray], steps: int,
                 seed: int | None = None):
        self.net, self.batch, self.steps, self.seed = net, batch, steps, seed
        self.prefix = c_library.c_prefix(net.name)
        self.ctype = "float" if np.dtype(net.dtype) == np.float32 else "double"

    def sizes(self, entry: str) -> str:
        shapes = {**self.net.signature.data}
        values: dict[str, int] = {}
        for name, shape in shapes.items():
            for symbol, extent in zip(shape, np.shape(self.batch[name])):
                if isinstance(symbol, str):
                    values[symbol] = extent
        return ", ".join(str(values[s]) for s in c_sizes(self.net.signature, entry))

    def source(self) -> str:
        p, t, sig = self.prefix, self.ctype, self.net.signature
        lines = ["#include <stdio.h>", f'#include "{p}.h"', ""]
        for name, value in self.batch.items():
            lines.append(f"static const {t} {name}[] = {{{c_literal(value)}}};")
        for name in sig.outputs:
            lines.append(f"static {t} out_{name}[{self.output_size(name)}];")
        lines += [
            f"static void show(const char *what, const {t} *a, int64_t n) {{",
            '    printf("%s", what);',
            '    for (int64_t i = 0; i < n; i++) printf(" %.17g", (double)a[i]);',
            '    printf("\\n");',
            "}",
            "int main(void) {",
            f"    {p} *net = {p}_new();",
            "    if (!net) return 9;",
            f"    {t} loss = -1;",
            "    int64_t size;  /* set by the lookups: read after each call */",
            f"    const {t} *a;",
        ]
        if self.seed is not None:
            lines.append(f"    {p}_seed(net, {self.seed});")
        data = ", ".join(c_arrays(sig, "step"))
        lines += [
            f"    for (int k = 0; k < {self.steps}; k++) {{",
            f"        int status = {p}_step(net, {self.sizes('step')}, {data}, &loss);",
            '        printf("step %d %.17g\\n", status, (double)loss);',
            "    }",
            f"    int status = {p}_value_and_grad(net, {self.sizes('step')}, {data}, &loss);",
            '    printf("value_and_grad %d %.17g\\n", status, (double)loss);',
        ]
        for name in sig.trained:
            lines.append(f'    a = {p}_grad(net, "{name}", &size);')
            lines.append(f'    show("grad:{name}", a, size);')
        for name in self.net.signature.params:
            lines.append(f'    a = {p}_param(net, "{name}", &size);')
            lines.append(f'    show("param:{name}", a, size);')
        arrays = ", ".join(list(sig.inputs) + [f"out_{n}" for n in sig.outputs])
        lines.append(f'    printf("forward %d\\n", {p}_forward(net, {self.sizes("forward")}, '
                     f"{arrays}));")
        for name in sig.outputs:
            lines.append(f'    show("output:{name}", out_{name}, {self.output_size(name)});')
        lines += [f"    {p}_free(net);", "    return 0;", "}", ""]
        return "\n".join(lines)

    def output_size(self, name: str) -> int:
        return int(np.prod(self.python_outputs()[name].shape))

    def python_outputs(self) -> dict[str, np.ndarray]:
        p = self.net.init(seed=0)
        return self.net.forward(p, **self.batch)

    def run(self, folder: Path, params: Mapping[str, np.ndarray]) -> dict:
        c_library.export(self.net, params, folder)
        main = folder / "main.c"
        main.write_text(self.source())
        exe = folder / "main"
        build([str(main), str(folder / f"{self.prefix}.o")], folder, exe)
        return parse(subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                                    timeout=60).stdout)


def build(sources: list[str], include: Path, exe: Path) -> None:
    done = subprocess.run([CC, "-O1", f"-I{include}", *sources, "-lm", "-o", str(exe)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def parse(text: str) -> dict:
    result: dict = {"step": []}
    for line in text.splitlines():
        head, *values = line.split()
        if head == "step":
            result["step"].append((int(values[0]), float(values[1])))
        elif head in ("value_and_grad", "forward"):
            result[head] = (int(values[0]), *map(float, values[1:]))
        else:
            result[head] = np.array([float(v) for v in values])
    return result


def python_run(net: CompiledNet, batch: Mapping[str, np.ndarray], steps: int,
               seed: int = 0) -> dict:
    """What the C program prints, computed by `net` in Python."""
    p = net.init(seed=0)
    s = net.init_state(p, seed=seed)
    result: dict = {"step": [(0, net.step(p, s, **batch)) for _ in range(steps)]}
    loss, grads = net.value_and_grad(p, state=s, **batch)
    result["value_and_grad"] = (0, loss)
    result.update({f"grad:{n}": g.ravel() for n, g in grads.items()})
    result.update({f"param:{n}": v.ravel() for n, v in p.items()})
    inputs = {n: batch[n] for n in net.inputs}
    result.update({f"output:{n}": y.ravel() for n, y in net.forward(p, **inputs).items()})
    return result


def assert_same(c: dict, python: dict, tolerance: float) -> None:
    assert [status for status, _ in c["step"]] == [0] * len(python["step"])
    np.testing.assert_allclose([loss for _, loss in c["step"]],
                               [loss for _, loss in python["step"]], rtol=tolerance,
                               atol=tolerance)
    assert c["value_and_grad"][0] == 0 and c["forward"][0] == 0
    np.testing.assert_allclose(c["value_and_grad"][1], python["value_and_grad"][1],
                               rtol=tolerance, atol=tolerance)
    arrays = sorted(k for k in python if ":" in k)
    assert sorted(k for k in c if ":" in k) == arrays
    for key in arrays:
        np.testing.assert_allclose(c[key], python[key], rtol=tolerance, atol=tolerance,
                                   err_msg=key)


def xor_batch() -> dict[str, np.ndarray]:
    return {"x": np.array([[0.0, 0], [0, 1], [1, 0], [1, 1]]),
            "t": np.array([[0.0], [1], [1], [0]])}


@pytest.mark.parametrize("backend", ["numpy", "llvm"])
def test_xor_trained_in_c_matches_python_step_for_step(tmp_path: Path, backend: str) -> None:
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend=backend)
    program = Program(net, xor_batch(), steps=10_000)
    c = program.run(tmp_path, net.init(seed=0))
    python = python_run(net, xor_batch(), 10_000)
    assert python["step"][-1][1] < 0.2 * python["step"][0][1]  # it learned something
    assert_same(c, python, 1e-12)


def test_modal_network_trains_and_predicts_as_python(tmp_path: Path) -> None:
    net = bpc.compile(MODAL, backend="llvm")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 6))
    batch = {"x": x, "t": np.eye(3)[rng.integers(0, 3, size=10)]}
    c = Program(net, batch, steps=60, seed=7).run(tmp_path, net.init(seed=0))
    python = python_run(net, batch, 60, seed=7)
    # the running statistics moved and dropout did drop: the modes were exercised
    assert not np.allclose(python["param:h1.running_var"], 1.0)
    assert_same(c, python, 1e-12)


# Products past the packed GEMM's threshold (80 x 200 x 160 and its gradients): in C they
# are our own packed GEMM, in Python NumPy's BLAS (or the same GEMM without it).
WIDE = """
network wide
input  x[N, 200]
target t[N, 3]
h = dense(x, 160, act=relu)
y = dense(h, 3)
output y
loss mse(y, t)
optimize sgd(lr=0.05, momentum=0.9)
"""


def test_packed_products_train_as_python(tmp_path: Path) -> None:
    net = bpc.compile(WIDE, backend="llvm")
    assert 80 * 200 * 160 >= gemm.PACKED_THRESHOLD
    rng = np.random.default_rng(8)
    batch = {"x": rng.normal(size=(80, 200)), "t": rng.normal(size=(80, 3))}
    c = Program(net, batch, steps=20).run(tmp_path, net.init(seed=0))
    # sums of 200 products in another order: the last bits differ, no more
    assert_same(c, python_run(net, batch, 20), 1e-10)


# A backward product with a weight read transposed, d_h = d_y @ W.T with k = 144 (8 vectors
# or more at any width), small enough for the loop nest: dot products along k (dot.py).
TRANSPOSED = """
network transposed
input  x[N, 20]
target t[N, 144]
h = dense(x, 24, act=tanh)
y = dense(h, 144)
output y
loss mse(y, t)
optimize sgd(lr=0.05)
"""


def test_dot_products_train_as_python(tmp_path: Path) -> None:
    net = bpc.compile(TRANSPOSED, backend="llvm")
    assert calls_dot_products(net)
    rng = np.random.default_rng(9)
    batch = {"x": rng.normal(size=(6, 20)), "t": rng.normal(size=(6, 144))}
    c = Program(net, batch, steps=10).run(tmp_path, net.init(seed=0))
    assert_same(c, python_run(net, batch, 10), 1e-12)


# A convolution whose im2col products (16 x 2048 x 72, and its weight gradient against the
# columns transposed) are large enough for the packed GEMM at batch 32.
CONV = """
network conv
input  x[N, 256]
target t[N]
image = reshape(x, [N, 1, 16, 16])
c1 = conv(image, 8, 3, padding=1, act=relu)
p1 = max_pool2d(c1, 2)
c2 = conv(p1, 16, 3, padding=1, act=relu)
y = dense(flatten(c2), 3)
output y
loss cross_entropy(y, t)
optimize sgd(lr=0.05)
"""


def test_convolution_trains_as_python(tmp_path: Path) -> None:
    net = bpc.compile(CONV, backend="llvm")
    assert 16 * 32 * 64 * 72 >= gemm.PACKED_THRESHOLD
    rng = np.random.default_rng(9)
    batch = {"x": rng.uniform(0, 1, size=(32, 256)),
             "t": rng.integers(0, 3, size=32).astype(float)}
    c = Program(net, batch, steps=5).run(tmp_path, net.init(seed=0))
    assert_same(c, python_run(net, batch, 5), 1e-10)


def test_class_indices_and_refusals_change_nothing(tmp_path: Path) -> None:
    net = bpc.compile(INDICES, backend="llvm")
    rng = np.random.default_rng(5)
    batch = {"x": rng.normal(size=(7, 4)), "t": rng.integers(0, 3, size=7).astype(float)}
    c = Program(net, batch, steps=200).run(tmp_path, net.init(seed=0))
    assert_same(c, python_run(net, batch, 200), 1e-12)

    # A bad class index, a NaN input, a batch too small for training: refused, and the
    # network's params and optimizer state (momentum) unchanged, as the next step shows.
    p = "indices"
    x, t = c_literal(batch["x"]), c_literal(batch["t"])
    source = f"""
#include <math.h>
#include <stdio.h>
#include <string.h>
#include "{p}.h"
static double x[] = {{{x}}};
static double t[] = {{{t}}};
int main(void) {{
    {p} *net = {p}_new();
    double loss = -7, before[4 * 5], x5 = x[5], t2 = t[2];
    int64_t size;
    int status = {p}_step(net, 7, x, t, &loss);
    printf("step %d %.17g\\n", status, loss);
    memcpy(before, {p}_param(net, "h.W", &size), sizeof before);
    t[2] = 3;    printf("index3 %d\\n", {p}_step(net, 7, x, t, &loss));
    t[2] = 0.5;  printf("index_half %d\\n", {p}_step(net, 7, x, t, &loss));
    t[2] = -1;   printf("index_negative %d\\n", {p}_step(net, 7, x, t, &loss));
    t[2] = t2;
    printf("loss_untouched %.17g\\n", loss);
    x[5] = NAN;  status = {p}_step(net, 7, x, t, &loss);
    printf("nan %d %.17g\\n", status, loss);
    x[5] = INFINITY; printf("inf %d\\n", {p}_step(net, 7, x, t, &loss));
    printf("forward_bad_size %d\\n", {p}_forward(net, -1, x, x));
    printf("unchanged %d\\n", memcmp(before, {p}_param(net, "h.W", &size), sizeof before));
    printf("unknown %d\\n", {p}_param(net, "h.w", &size) == NULL);
    x[5] = x5;
    status = {p}_step(net, 7, x, t, &loss);
    printf("next %d %.17g\\n", status, loss);
    {p}_free(net);
    return 0;
}}
"""
    refused = compile_and_run(tmp_path, "refusals", source)
    assert refused["index3"] == [-3] and refused["index_half"] == [-3]
    assert refused["index_negative"] == [-3]
    # a NaN input makes the loss NaN: status 1, and the loss written for the program to see
    assert refused["nan"][0] == 1 and np.isnan(refused["nan"][1])
    assert refused["inf"][0] >= 1
    assert refused["forward_bad_size"] == [-1]
    assert refused["unchanged"] == [0] and refused["unknown"] == [1]
    # steps refused before computing anything wrote no loss: it is still the first step's
    assert refused["loss_untouched"] == [refused["step"][1]]
    # the next good step is Python's second: params and momentum came through unchanged
    p, s = net.init(seed=0), net.init_state()
    python = [net.step(p, s, **batch) for _ in range(2)]
    assert refused["next"][0] == 0
    assert refused["next"][1] == pytest.approx(python[1], rel=1e-13)


def compile_and_run(folder: Path, name: str, source: str, objects: list[Path] = ()
                    ) -> dict[str, list[float]]:
    main = folder / f"{name}.c"
    main.write_text(source)
    exe = folder / name
    build([str(main), *(str(o) for o in (objects or folder.glob("*.o")))], folder, exe)
    out = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return {line.split()[0]: [float(v) for v in line.split()[1:]]
            for line in out.stdout.splitlines()}


def test_float32_library_matches_python_float32(tmp_path: Path) -> None:
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend="llvm", dtype="float32")
    batch = {k: v.astype(np.float32) for k, v in xor_batch().items()}
    program = Program(net, batch, steps=200)
    assert "float" in program.source() and program.ctype == "float"
    c = program.run(tmp_path, net.init(seed=0))
    assert_same(c, python_run(net, batch, 200), 2e-5)


def test_object_asks_for_the_c_and_math_libraries_only(tmp_path: Path) -> None:
    nm = shutil.which("nm")
    if nm is None:
        pytest.skip("no nm on this machine")
    net = bpc.compile(MODAL, backend="llvm")
    _, obj = c_library.export(net, net.init(seed=0), tmp_path)
    listing = subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True,
                             check=True).stdout
    undefined = {line.split()[-1] for line in listing.splitlines() if line.strip()}
    assert undefined, "an object that uses no memory at all is not this library"
    assert undefined <= LIBC | LIBM, undefined - LIBC - LIBM
    defined = subprocess.run([nm, "-g", "--defined-only", str(obj)], capture_output=True,
                             text=True, check=True).stdout
    exported = {line.split()[-1] for line in defined.splitlines() if line.strip()}
    assert exported and all(name.startswith("modal_") for name in exported), exported


def test_two_networks_link_into_one_program(tmp_path: Path) -> None:
    xor = bpc.compile_file(EXAMPLES / "xor.bp", backend="llvm")
    indices = bpc.compile(INDICES, backend="llvm")
    _, xor_object = c_library.export(xor, xor.init(seed=0), tmp_path)
    _, indices_object = c_library.export(indices, indices.init(seed=4), tmp_path)
    x = np.array([[0.5, -1.0, 2.0, 0.25]])
    source = f"""
#include <stdio.h>
#include "xor.h"
#include "indices.h"
int main(void) {{
    xor *a = xor_new();
    indices *b = indices_new();
    const double xa[] = {{1, 0}}, xb[] = {{{c_literal(x)}}};
    double ya[1], yb[3];
    printf("status %d %d\\n", xor_forward(a, 1, xa, ya), indices_forward(b, 1, xb, yb));
    printf("xor %.17g\\n", ya[0]);
    printf("indices %.17g %.17g %.17g\\n", yb[0], yb[1], yb[2]);
    xor_free(a);
    indices_free(b);
    return 0;
}}
"""
    out = compile_and_run(tmp_path, "both", source, [xor_object, indices_object])
    assert out["status"] == [0, 0]
    np.testing.assert_allclose(
        out["xor"], xor.forward(xor.init(seed=0), x=np.array([[1.0, 0]]))["y"].ravel(),
        rtol=1e-13)
    np.testing.assert_allclose(
        out["indices"], indices.forward(indices.init(seed=4), x=x)["y"].ravel(), rtol=1e-13)


def test_cli_export_and_the_bundled_c_example(tmp_path: Path) -> None:
    """The README's commands: export examples/xor.bp with trained params, build
    examples/c/train_xor.c with one cc command, run it; its printed losses are Python's."""
    net = bpc.compile_file(EXAMPLES / "xor.bp", backend="llvm")
    trained = net.init(seed=3)
    net.save_params(trained, tmp_path / "trained.npz")
    done = subprocess.run([sys.executable, "-m", "bpcompile.cli", "export",
                           str(EXAMPLES / "xor.bp"), "--params", str(tmp_path / "trained.npz"),
                           "--to", "c", "-o", str(tmp_path / "build")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "xor.h" in done.stdout and "cc " in done.stdout
    exe = tmp_path / "train_xor"
    build([str(EXAMPLES / "c" / "train_xor.c"), str(tmp_path / "build" / "xor.o")],
          tmp_path / "build", exe)
    printed = subprocess.run([str(exe)], capture_output=True, text=True, check=True,
                             timeout=60).stdout.splitlines()
    losses = {int(line.split()[1]): float(line.split()[3])
              for line in printed if line.startswith("step")}
    s = net.init_state(trained)
    python = [net.step(trained, s, **xor_batch()) for _ in range(max(losses) + 1)]
    assert len(losses) >= 3
    for step, loss in losses.items():
        assert loss == pytest.approx(python[step], abs=1e-6)
    predictions = [float(line.split()[-1]) for line in printed if " xor " in line]
    expected = net.forward(trained, x=xor_batch()["x"])["y"].ravel()
    np.testing.assert_allclose(predictions, expected, atol=1e-3)
