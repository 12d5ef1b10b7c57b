"""Properties of the generated NumPy code (numpy backend only: it is the text people read).

Oracles: the derivative forms DESIGN.md and the README promise (sigmoid's backward reads the
forward value, `y * (1 - y)`; tanh's reads `1 - h ** 2`; softmax cross-entropy's is
`(softmax - t) / N`), the `.bp` source itself (which line assigns which name), Python's own
`compile` and import machinery, and central finite differences of the generated module's own
`loss` (so a module that compiles but computes nonsense fails). The compile-time test checks
that derivation costs grow with the graph, not with the number of weights.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import EXAMPLES, example_paths, indices_in_range, logical_lines

import bpcompile as bpc
from bpcompile.differentiate import symbolic

TRANSCENDENTAL_CALL = re.compile(r"\b(np\.exp|np\.expm1|np\.log|np\.log1p|np\.tanh|np\.sin|"
                                 r"np\.cos|np\.logaddexp|sigmoid|elu|np\.sqrt)\(")
LINE_COMMENT = re.compile(r"  # (?P<file>[\w.<>-]+\.bp):(?P<lines>\d+(?:,\d+)*)$")
ASSIGNMENT = re.compile(r"^(?P<target>[A-Za-z_]\w*)(?:\[\.\.\.\])? (?P<op>[-+*/]?=) (?P<rhs>.*)$")
# Lines that bind what a function was given (params, data, state, gradients, sizes) or call
# another entry point: plumbing, not statements of the `.bp` file.
PLUMBING = [
    re.compile(r'^\w+ = (p|s|grads)\["[\w.]+"\]$'),
    re.compile(r"^\w+ = np\.asarray\(\w+, dtype=DTYPE\)$"),
    re.compile(r"^\w+ = \w+\.shape\[\d+\]$"),
    re.compile(r"^loss, grads = value_and_grad\(.*\)$"),
    re.compile(r"^buffers = \{\}$"),   # step's dict for batch norm's new running statistics
]
ENTRY_POINTS = ("forward", "loss", "value_and_grad", "step")


# ----------------------------------------------------------------------- reading code


def function_body(code: str, name: str) -> list[str]:
    """The statement lines of `def name(...)`, dedented, without its docstring."""
    lines = code.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"def {name}("))
    body = []
    for line in lines[start + 1:]:
        if line and not line.startswith(" "):
            break
        body.append(line[4:])
    text = "\n".join(body)
    text = re.sub(r'^""".*?"""\n', "", text, count=1, flags=re.S)  # the docstring
    return logical_lines([line for line in text.splitlines() if line.strip()])


def statement(line: str) -> str:
    """The line without its trailing `# file.bp:N` comment."""
    return LINE_COMMENT.sub("", line)


def split_value_and_grad(code: str) -> tuple[list[str], list[str]]:
    """value_and_grad's statements: the forward part, then the backward part (from the first
    adjoint `d_...` on; return excluded)."""
    body = [line for line in function_body(code, "value_and_grad")
            if not line.startswith("return") and not any(p.match(statement(line))
                                                         for p in PLUMBING)]
    body = [line for line in body if ASSIGNMENT.match(statement(line))]
    first = next(i for i, line in enumerate(body) if line.startswith("d_"))
    return body[:first], body[first:]


def numpy_code(source: str | Path) -> str:
    """The training mode's module: for a network with dropout or batch norm, the one whose
    `value_and_grad` is the graph's (the standalone module's dispatches on the mode)."""
    if isinstance(source, Path):
        return bpc.compile_file(source, backend="numpy").code(training=True)
    return bpc.compile(source, backend="numpy").code(training=True)


# ------------------------------------------------------------------ derivative forms


def test_xor_sigmoid_backward_reads_the_forward_value() -> None:
    code = numpy_code(EXAMPLES / "xor.bp")
    forward, backward = split_value_and_grad(code)
    assert backward, "value_and_grad has adjoint lines"
    for line in backward:
        assert "exp" not in statement(line), f"backward recomputes exp: {line}"
        assert "sigmoid(" not in statement(line), f"backward recomputes sigmoid: {line}"
    for name in ("y", "h"):  # both sigmoid layers
        form = re.compile(rf"^d_\w+ = d_\w+ \* {name} \* \(1 - {name}\)$")
        assert any(form.match(statement(line)) for line in backward), \
            f"no `d_... = d_... * {name} * (1 - {name})` in:\n" + "\n".join(backward)


def test_digits_cross_entropy_backward_is_p_minus_t_over_n() -> None:
    code = numpy_code(EXAMPLES / "digits.bp")
    _, backward = split_value_and_grad(code)
    form = re.compile(r"^d_logits = \(softmax\(logits, axis=(-1|1)\) - t\) / N$")
    assert any(form.match(statement(line)) for line in backward), "\n".join(backward)
    # and no other transcendental work in its backward: relu's is a select on the output
    for line in backward:
        calls = TRANSCENDENTAL_CALL.findall(statement(line))
        assert not calls, f"backward evaluates {calls}: {line}"


def test_tanh_backward_reads_one_minus_h_squared() -> None:
    code = numpy_code("""
input x[N, 2]
target t[N, 1]
param W1[2, 3]
param b1[3]
param W2[3, 1]
h = tanh(x @ W1 + b1)
y = h @ W2
loss mse(y, t)
""")
    _, backward = split_value_and_grad(code)
    assert any("(1 - h ** 2)" in statement(line) for line in backward), "\n".join(backward)
    for line in backward:
        assert "tanh" not in statement(line), f"backward recomputes tanh: {line}"


@pytest.mark.parametrize("act, reads", [("sigmoid", "y * (1 - y)"), ("exp", "y"),
                                         ("tanh", "(1 - y ** 2)")])
def test_output_layer_backward_reads_its_value(act: str, reads: str) -> None:
    """The last layer of a network, whose adjoint comes straight from the loss."""
    code = numpy_code(f"""
input x[N, 2]
target t[N, 2]
param W[2, 2]
y = {act}(x @ W)
loss sum((y - t) ** 2)
""")
    _, backward = split_value_and_grad(code)
    assert any(reads in statement(line) for line in backward), "\n".join(backward)
    for line in backward:
        assert not TRANSCENDENTAL_CALL.findall(statement(line)), f"recomputed: {line}"


# --------------------------------------------------------------- reuse of forward values


# name -> .bp source (or an example's path)
REUSE_NETWORKS: dict[str, str | Path] = {
    **{path.name: path for path in example_paths()},
    "tanh-sigmoid.bp": """
input x[N, 3]
target t[N, 2]
param W1[3, 4]
param W2[4, 2]
h = tanh(x @ W1)
g = sigmoid(h @ W2) * exp(x @ W1 @ W2 / 10)
loss sum((g - t) ** 2)
""",
    "softplus-elu.bp": """
input x[N, 3]
target t[N, 1]
h1 = dense(x, 4, act=softplus)
h2 = dense(h1, 4, act=elu)
y = dense(h2, 1, act=sigmoid)
loss mean((y - t) ** 2)
""",
    "reductions.bp": """
input x[N, 3]
param W[3, 4]
param unused[2]
z = x @ W
a = max(z, axis=1) + sum(logsumexp(z, axis=0, keepdims=true) @ W.T @ x.T)
b = softmax(z, axis=0) * log_softmax(z)
loss mean(a) + sum(b) + sum(where(z > 0, z, 0.5 * z))
optimize adam(lr=0.01, weight_decay=0.1, clip_norm=1.0)
""",
    "shared-weights.bp": """
def sw(u) = u * sigmoid(u)
input x[N, 3]
target t[N, 3]
param a[]
param W[3, 3]
y = sw(a * x @ W) + x @ W.T
loss mse(y, t) + sum(W @ W)
optimize sgd(lr=0.1, momentum=0.9, nesterov=true, weight_decay=0.01, clip_norm=2)
""",
}

# The transcendentals a backward pass cannot avoid: softplus' derivative is sigmoid(u), which
# its value log(1 + exp(u)) does not give without another exp; the softmax family's
# derivatives are made of softmax (exp of log_softmax, or of x - logsumexp). No other
# backward evaluates one.
NEEDED_IN_BACKWARD = {"softplus-elu.bp": ["sigmoid"],
                      # bce_with_logits: the forward has softplus(z), its derivative sigmoid(z)
                      "vanishing.bp": ["sigmoid"], "vanishing_relu.bp": ["sigmoid"],
                      "vanishing_bn.bp": ["sigmoid"],
                      "reductions.bp": ["np.exp", "np.exp"]}


@pytest.mark.parametrize("name", list(REUSE_NETWORKS))
def test_backward_reuses_forward_values(name: str) -> None:
    """No forward statement is computed again in the backward pass: every forward value the
    backward needs is read from its variable."""
    code = numpy_code(REUSE_NETWORKS[name])
    forward, backward = split_value_and_grad(code)
    backward_text = "\n".join(statement(line) for line in backward)
    for line in forward:
        rhs = ASSIGNMENT.match(statement(line))["rhs"]
        if re.fullmatch(r"[\w.]+", rhs):  # a bare name or number: nothing to recompute
            continue
        assert rhs not in backward_text, f"{name}: backward recomputes `{rhs}`"
    backward_calls = [c for line in backward for c in TRANSCENDENTAL_CALL.findall(
        statement(line))]
    assert sorted(backward_calls) == sorted(NEEDED_IN_BACKWARD.get(name, [])), \
        f"{name}: backward evaluates {backward_calls}:\n{backward_text}"


@pytest.mark.parametrize("name", list(REUSE_NETWORKS))
def test_forward_values_are_not_named_as_adjoints(name: str) -> None:
    """Every value of the forward pass is computed before the first adjoint `d_...`, so no
    forward value was given an adjoint's name (as when d(a * b)/da is just b)."""
    network = REUSE_NETWORKS[name]
    code = numpy_code(network)
    text = network.read_text() if isinstance(network, Path) else network
    _, assigned = _bp_lines(text)
    body = [statement(line) for line in function_body(code, "value_and_grad")]
    targets = [m["target"] for m in map(ASSIGNMENT.match, body) if m]
    first_adjoint = next(i for i, target in enumerate(targets) if target.startswith("d_"))
    for target in [*assigned, "loss"]:
        position = targets.index(target) if target in targets else -1
        assert position < first_adjoint, \
            f"{name}: `{target}` is computed after the adjoints begin:\n" + "\n".join(body)


# -------------------------------------------------------------- every example's module


@pytest.mark.parametrize("path", example_paths(), ids=lambda p: p.name)
def test_example_module_compiles_and_is_standalone(path: Path, tmp_path: Path) -> None:
    code = bpc.compile_file(path, backend="numpy").code()   # what `compile` writes
    compile(code, path.with_suffix(".py").name, "exec")  # a SyntaxError fails the test
    imports = [line for line in code.splitlines() if re.match(r"^\s*(import|from) ", line)]
    assert imports == ["import numpy as np"], imports

    module_path = tmp_path / f"generated_{path.stem}.py"
    module_path.write_text(code)
    spec = importlib.util.spec_from_file_location(module_path.stem, module_path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    for entry in ("init", "forward", "loss", "value_and_grad", "init_state", "step"):
        assert callable(getattr(module, entry)), entry

    # the imported module computes a gradient: check it by central differences of its loss
    net = bpc.compile_file(path)
    rng = np.random.default_rng(0)
    p = {k: v + rng.normal(0, 0.05, size=v.shape) for k, v in module.init(seed=3).items()}
    data = [rng.normal(size=tuple(3 if isinstance(d, str) else d for d in shape))
            for shape in {**net.inputs, **net.targets}.values()]
    names = list({**net.inputs, **net.targets})
    if net.signature.indices:  # class indices, a gather's rows: whole numbers in range
        valid = indices_in_range(net, dict(zip(names, data)))
        data = [valid[name] for name in names]
    elif "cross_entropy" in path.read_text():  # its targets are one-hot rows, as SPEC says
        data[-1] = np.eye(data[-1].shape[1])[rng.integers(0, data[-1].shape[1], size=3)]
    value, grads = module.value_and_grad(p, *data)

    def loss(params: dict) -> float:   # value_and_grad's mode: training (masks of seed 0)
        return module.loss(params, *data, training=True) if net.signature.modal else \
            module.loss(params, *data)

    assert value == pytest.approx(loss(p), rel=1e-13)
    for name, g in grads.items():
        assert g.shape == p[name].shape
        for flat in rng.choice(g.size, size=min(g.size, 4), replace=False):
            index = np.unravel_index(flat, g.shape)
            # a second, smaller step where the first's truncation error shows (eight batch
            # norms over 3 rows curve the loss sharply)
            tried = []
            for step in (1e-5, 1e-6):
                h = step * max(1.0, abs(float(p[name][index])))
                up, down = dict(p), dict(p)
                up[name], down[name] = p[name].copy(), p[name].copy()
                up[name][index] += h
                down[name][index] -= h
                numeric = (loss(up) - loss(down)) / (2 * h)
                tried.append(numeric)
                if g[index] == pytest.approx(numeric, rel=1e-6, abs=1e-8):
                    break
            assert g[index] == pytest.approx(numeric, rel=1e-6, abs=1e-8), \
                f"{name}{index}: finite differences {tried}"


def _bp_lines(text: str) -> tuple[set[int], dict[str, int]]:
    """The `.bp` lines holding a statement, and the line assigning each name."""
    statements, assigned = set(), {}
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0].strip()
        if code:
            statements.add(number)
        match = re.match(r"^([A-Za-z_]\w*)\s*=(?!=)", code)
        if match and not code.startswith(("const", "param", "def")):
            assigned[match[1]] = number
    return statements, assigned


@pytest.mark.parametrize("name", list(REUSE_NETWORKS))
def test_every_statement_names_its_bp_line(name: str) -> None:
    network = REUSE_NETWORKS[name]
    if isinstance(network, Path):
        code, text = numpy_code(network), network.read_text()
    else:
        code = bpc.compile(network, backend="numpy", filename=name).code(training=True)
        text = network
    statements, assigned = _bp_lines(text)
    # With no `optimize` statement the update comes from no line of the file.
    entry_points = ENTRY_POINTS if re.search(r"^optimize ", text, re.M) else ENTRY_POINTS[:-1]
    checked = 0
    for function in entry_points:
        for line in function_body(code, function):
            bare = statement(line)
            if not ASSIGNMENT.match(bare) or any(p.match(bare) for p in PLUMBING):
                continue
            checked += 1
            comment = LINE_COMMENT.search(line)
            assert comment is not None, f"{function}: no `# {name}:N` on: {line}"
            assert comment["file"] == name, line
            lines = [int(n) for n in comment["lines"].split(",")]
            assert set(lines) <= statements, f"{line} points at a blank or comment line"
            target = ASSIGNMENT.match(bare)["target"]
            if target in assigned and function != "step":
                assert assigned[target] in lines, \
                    f"{target} is assigned on {name}:{assigned[target]}, not {lines}"
    assert checked >= 4, "the test found the generated statements"


# -------------------------------------------------------------------------- compile time


def _deep_mlp(depth: int, width: int) -> str:
    lines = [f"input x[N, {width}]", f"target t[N, {width}]"]
    previous = "x"
    for layer in range(1, depth + 1):
        act = "relu" if layer < depth else "linear"
        lines.append(f"h{layer} = dense({previous}, {width}, act={act})")
        previous = f"h{layer}"
    lines += [f"loss mse({previous}, t)", "optimize adam(lr=0.001)"]
    return "\n".join(lines) + "\n"


def test_compile_work_grows_with_the_graph_not_the_weights() -> None:
    """20 dense relu layers of width 512 (5.2 million weights): SymPy derives each distinct
    expression once, so the derivatives taken do not depend on the width and hardly on the
    depth (oracle: the same count for a narrow, shallow net). The time this takes is
    measured in benchmarks/compile_times.py, not asserted here."""
    def derivatives_taken(source: str) -> tuple[int, bpc.CompiledNet]:
        symbolic.partial.cache_clear()
        symbolic.backward.cache_clear()
        net = bpc.compile(source, backend="numpy")
        return symbolic.partial.cache_info().misses, net

    small, _ = derivatives_taken(_deep_mlp(2, 8))
    large, net = derivatives_taken(_deep_mlp(20, 512))
    assert sum(int(np.prod(s)) for s in net.params.values()) == 20 * (512 * 512 + 512)
    assert large == small, f"{large} derivatives for 20 x 512, {small} for 2 x 8"
    # and its gradient is right (a few entries of the first and last layer, batch of 2)
    rng = np.random.default_rng(0)
    p = net.init(seed=0)
    x, t = rng.normal(size=(2, 512)), rng.normal(size=(2, 512))
    _, grads = net.value_and_grad(p, x=x, t=t)
    for name in ("h1.b", "h20.W"):
        for flat in rng.choice(p[name].size, size=3, replace=False):
            index = np.unravel_index(flat, p[name].shape)
            h = 1e-5
            up, down = dict(p), dict(p)
            up[name], down[name] = p[name].copy(), p[name].copy()
            up[name][index] += h
            down[name][index] -= h
            numeric = (net.loss(up, x=x, t=t) - net.loss(down, x=x, t=t)) / (2 * h)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-5, abs=1e-9)
