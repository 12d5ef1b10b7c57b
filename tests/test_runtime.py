"""Runtime abuse through the public API: every entry point refuses bad arrays with a BPError
and changes nothing; good arrays of any real dtype or layout give the same results.

Oracles: the same call on float C-order data; a bit-for-bit snapshot of params and state
taken before every refused call; NumPy written out by hand for tiny networks; additivity of a
sum-loss over the rows of a batch.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import numpy as np
import pytest
from conftest import EXAMPLES, PROBE

import bpcompile as bpc
from bpcompile import BPError, BPNameError, BPNumericError, BPShapeError, BPTypeError

NETWORK = PROBE
CALLS = ["forward", "loss", "value_and_grad", "step"]


@pytest.fixture(params=["float64", "float32"])
def net(request: pytest.FixtureRequest, backend: str) -> bpc.CompiledNet:
    return bpc.compile(NETWORK, backend=backend, dtype=request.param, filename="probe.bp")


def open_example(name: str) -> str:
    return (EXAMPLES / name).read_text()


def data(n: int = 5, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, 3)), "m": rng.standard_normal((n, 2)),
            "t": rng.standard_normal((n, 2))}


def snapshot(*groups: dict) -> list[dict[str, tuple]]:
    return [{k: (np.asarray(v).dtype, np.asarray(v).shape, np.asarray(v).tobytes())
             for k, v in g.items()} for g in groups]


def call(net: bpc.CompiledNet, name: str, p: dict, s: dict, arrays: dict) -> object:
    """Entry point `name`, given only the data it takes (forward takes no targets)."""
    if name == "forward":
        arrays = {k: v for k, v in arrays.items() if k not in net.targets}
        return net.forward(p, **arrays)
    if name == "step":
        return net.step(p, s, **arrays)
    return getattr(net, name)(p, **arrays)


def refused(net: bpc.CompiledNet, name: str, p: dict, s: dict, arrays: dict,
            error: type[BPError]) -> str:
    """Call `name`, expect `error`, and check that nothing changed; the message."""
    before = snapshot(p, s)
    with pytest.raises(error) as info:
        call(net, name, p, s, arrays)
    assert snapshot(p, s) == before
    return str(info.value)


# ---------------------------------------------------------------- bad data

def _missing(d: dict) -> dict:
    return {k: v for k, v in d.items() if k != "x"}


DATA_ABUSE: dict[str, tuple[Callable[[dict], dict], type[BPError], tuple[str, ...]]] = {
    # name: (how to spoil the data, the error, what its message must mention)
    "missing": (_missing, BPNameError, ("x",)),
    "unknown": (lambda d: {**d, "z": d["x"]}, BPNameError, ("z",)),
    "rank_high": (lambda d: {**d, "x": d["x"][:, :, None]}, BPShapeError,
                  ("x", "(5, 3, 1)", "N, 3")),
    "rank_low": (lambda d: {**d, "x": d["x"][:, 0]}, BPShapeError, ("x", "(5,)", "N, 3")),
    "scalar": (lambda d: {**d, "x": 2.0}, BPShapeError, ("x", "()", "N, 3")),
    "size": (lambda d: {**d, "x": np.ones((5, 4))}, BPShapeError, ("x", "(5, 4)", "N, 3")),
    "bound_two_ways": (lambda d: {**d, "m": np.ones((4, 2))}, BPShapeError,
                       ("m", "(4, 2)", "x", "N")),
    "empty": (lambda d: {**d, "x": np.ones((0, 3)), "m": np.ones((0, 2))}, BPShapeError,
              ("x",)),
    "object": (lambda d: {**d, "x": d["x"].astype(object)}, BPTypeError, ("x", "object")),
    "string": (lambda d: {**d, "x": d["x"].astype(str)}, BPTypeError, ("x",)),
    "complex": (lambda d: {**d, "x": d["x"] + 0j}, BPTypeError, ("x", "complex")),
    "none": (lambda d: {**d, "x": None}, BPTypeError, ("x",)),
    "ragged": (lambda d: {**d, "x": [[1.0, 2.0, 3.0], [1.0]]}, BPTypeError, ("x",)),
    "datetime": (lambda d: {**d, "x": np.zeros((5, 3), dtype="datetime64[s]")}, BPTypeError,
                 ("x",)),
}


@pytest.mark.parametrize("entry", CALLS)
@pytest.mark.parametrize("abuse", list(DATA_ABUSE))
def test_bad_data_is_refused(net: bpc.CompiledNet, entry: str, abuse: str) -> None:
    spoil, error, mentions = DATA_ABUSE[abuse]
    p = net.init(seed=1)
    s = net.init_state(p)
    message = refused(net, entry, p, s, spoil(data()), error)
    assert entry in message
    for word in mentions:
        assert word in message, (word, message)


@pytest.mark.parametrize("entry", ["loss", "value_and_grad", "step"])
def test_missing_and_mismatched_target(net: bpc.CompiledNet, entry: str) -> None:
    p = net.init(seed=1)
    s = net.init_state(p)
    d = data()
    assert "t" in refused(net, entry, p, s, {k: v for k, v in d.items() if k != "t"},
                          BPNameError)
    message = refused(net, entry, p, s, {**d, "t": np.ones((6, 2))}, BPShapeError)
    assert "t" in message and "(6, 2)" in message


def test_forward_refuses_unknown_names(net: bpc.CompiledNet) -> None:
    p = net.init()
    with pytest.raises(BPNameError):
        net.forward(p, **data(), z=np.ones(3))


# ---------------------------------------------------------------- data conversion

CONVERSIONS: dict[str, Callable[[np.ndarray], object]] = {
    "int64": lambda a: a.astype(np.int64),
    "int8": lambda a: a.astype(np.int8),
    "uint16": lambda a: a.astype(np.uint16),
    "bool": lambda a: a.astype(bool),
    "float32": lambda a: a.astype(np.float32),
    "float16": lambda a: a.astype(np.float16),
    "fortran": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=0)[::2],
    "transposed_view": lambda a: np.ascontiguousarray(a.T).T,
    "reversed_twice": lambda a: a[::-1][::-1],
    "list": lambda a: a.tolist(),
    "read_only": lambda a: _read_only(a),
}


def _read_only(a: np.ndarray) -> np.ndarray:
    a = a.copy()
    a.setflags(write=False)
    return a


def _integral(d: dict) -> dict:
    """Data whose values survive every conversion above (small non-negative integers)."""
    rng = np.random.default_rng(7)
    return {k: rng.integers(0, 2, size=v.shape).astype(np.float64) for k, v in d.items()}


def _same(a: object, b: object) -> None:
    if isinstance(a, dict):
        assert set(a) == set(b)
        for k in a:
            _same(a[k], b[k])
    elif isinstance(a, tuple):
        for x, y in zip(a, b):
            _same(x, y)
    else:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert np.asarray(a).dtype == np.asarray(b).dtype


@pytest.mark.parametrize("entry", CALLS)
@pytest.mark.parametrize("how", list(CONVERSIONS))
def test_data_of_any_real_dtype_and_layout(net: bpc.CompiledNet, entry: str, how: str) -> None:
    good = _integral(data())
    converted = {k: CONVERSIONS[how](v) for k, v in good.items()}
    p1, p2 = net.init(seed=2), net.init(seed=2)
    s1, s2 = net.init_state(p1), net.init_state(p2)
    expected = call(net, entry, p1, s1, good)
    before = snapshot(converted) if how != "list" else None
    result = call(net, entry, p2, s2, converted)
    _same(result, expected)
    _same(p2, p1)
    _same(s2, s1)
    if before is not None:
        assert snapshot(converted) == before  # the caller's data is never written


@pytest.mark.parametrize("entry", ["forward", "loss", "value_and_grad"])
def test_params_are_converted_for_read_only_calls(net: bpc.CompiledNet, entry: str) -> None:
    p = net.init(seed=3)
    d = data()
    expected = call(net, entry, p, {}, d)
    variants = {
        "fortran": {k: _fortran(v) for k, v in p.items()},
        "float64": {k: v.astype(np.float64) for k, v in p.items()},
        "list": {k: v.tolist() for k, v in p.items()},
        "read_only": {k: _read_only(v) for k, v in p.items()},
    }
    for name, q in variants.items():
        before = snapshot(q) if name != "list" else None
        _same(call(net, entry, q, {}, d), expected)
        if before is not None:
            assert snapshot(q) == before, name


PARAM_ABUSE: dict[str, tuple[Callable[[dict], dict], type[BPError]]] = {
    "missing": (lambda p: {k: v for k, v in p.items() if k != "W"}, BPNameError),
    "unknown": (lambda p: {**p, "V": p["W"].copy()}, BPNameError),
    "shape": (lambda p: {**p, "W": np.zeros((2, 3), p["W"].dtype)}, BPShapeError),
    "scalar_shape": (lambda p: {**p, "a": np.zeros((1,), p["a"].dtype)}, BPShapeError),
    "object": (lambda p: {**p, "W": p["W"].astype(object)}, BPTypeError),
    "complex": (lambda p: {**p, "W": p["W"] + 0j}, BPTypeError),
    "not_a_dict": (lambda p: list(p.values()), BPTypeError),
}


@pytest.mark.parametrize("entry", CALLS)
@pytest.mark.parametrize("abuse", list(PARAM_ABUSE))
def test_bad_params_are_refused(net: bpc.CompiledNet, entry: str, abuse: str) -> None:
    spoil, error = PARAM_ABUSE[abuse]
    p = net.init(seed=1)
    s = net.init_state(p)
    bad = spoil(p)
    before = snapshot(p, s)
    with pytest.raises(error):
        call(net, entry, bad, s, data())
    assert snapshot(p, s) == before


def _other_dtype(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32 if a.dtype == np.float64 else np.float64)


def _fortran(a: np.ndarray) -> np.ndarray:
    """Not C-contiguous: Fortran order for 2-D, a reversed view otherwise (0-d stays 0-d,
    where np.asfortranarray would make it 1-d)."""
    return np.asfortranarray(a) if a.ndim >= 2 else a[::-1].copy()[::-1] if a.ndim else a


IN_PLACE_ABUSE: dict[str, tuple[Callable[[np.ndarray], object], type[BPError]]] = {
    "other_float_dtype": (_other_dtype, BPTypeError),
    "int": (lambda a: a.astype(np.int64), BPTypeError),
    "fortran": (_fortran, BPTypeError),
    "strided": (lambda a: np.repeat(a, 2, axis=0)[::2], BPTypeError),
    "read_only": (_read_only, BPTypeError),
    "shape": (lambda a: np.zeros(a.shape + (1,), a.dtype), BPShapeError),
    "list": (lambda a: a.tolist(), BPTypeError),
}


@pytest.mark.parametrize("abuse", list(IN_PLACE_ABUSE))
@pytest.mark.parametrize("which", ["param", "state"])
def test_step_refuses_params_and_state_it_cannot_update(net: bpc.CompiledNet, abuse: str,
                                                        which: str) -> None:
    spoil, error = IN_PLACE_ABUSE[abuse]
    p = net.init(seed=1)
    s = net.init_state(p)
    net.step(p, s, **data())  # non-zero state
    key = "W" if which == "param" else "W.m"
    bad_p = {**p, key: spoil(p[key])} if which == "param" else p
    bad_s = {**s, key: spoil(s[key])} if which == "state" else s
    originals = snapshot(p, s, bad_p, bad_s)
    with pytest.raises(error) as info:
        net.step(bad_p, bad_s, **data())
    assert key in str(info.value)
    assert snapshot(p, s, bad_p, bad_s) == originals


@pytest.mark.parametrize("which", ["param", "state"])
def test_step_refuses_missing_unknown_and_shared(net: bpc.CompiledNet, which: str) -> None:
    p = net.init(seed=1)
    s = net.init_state(p)
    key, other = ("W", "b") if which == "param" else ("b.m", "b.v")
    group = p if which == "param" else s
    spoiled = {
        "missing": ({k: v for k, v in group.items() if k != key}, BPNameError),
        "unknown": ({**group, "extra": group[key].copy()}, BPNameError),
        # params W and b differ in shape, so the shape check may speak first
        "same_array_twice": ({**group, other: group[key]},
                             BPTypeError if which == "state" else BPError),
    }
    for name, (bad, error) in spoiled.items():
        args = (bad, s) if which == "param" else (p, bad)
        before = snapshot(p, s)
        with pytest.raises(error):
            net.step(*args, **data())
        assert snapshot(p, s) == before, name


def test_step_refuses_arrays_sharing_memory(net: bpc.CompiledNet) -> None:
    """step writes every param and state array in place: if two share memory, one update
    overwrites what another still reads, so step refuses."""
    p = net.init(seed=1)
    s = net.init_state(p)
    net.step(p, s, **data())
    flat = np.concatenate([v.ravel() for v in [*p.values(), *s.values()]])
    sizes = [v.size for v in [*p.values(), *s.values()]]
    cases = {
        "state is its param": (p, {**s, "W.m": p["W"]}),
        "param inside another": (
            {**p, "b": p["W"].reshape(-1)[1:3]}, s),
        "overlapping views": (
            {**p, "b": flat[0:2]}, {**s, "b.m": flat[1:3]}),
        "scalar inside a state": (p, {**s, "step": s["W.v"].reshape(-1)[4:5].reshape(())}),
    }
    for name, (bad_p, bad_s) in cases.items():
        before = snapshot(p, s, bad_p, bad_s)
        with pytest.raises(BPTypeError, match="memory"):
            net.step(bad_p, bad_s, **data())
        assert snapshot(p, s, bad_p, bad_s) == before, name
    # views of one buffer that do not overlap are fine, and update as separate arrays do
    views, start = [], 0
    for size in sizes:
        views.append(flat[start:start + size])
        start += size
    shaped = [v.reshape(a.shape) for v, a in zip(views, [*p.values(), *s.values()])]
    packed_p = dict(zip(p, shaped[:len(p)]))
    packed_s = dict(zip(s, shaped[len(p):]))
    assert net.step(packed_p, packed_s, **data()) == net.step(p, s, **data())
    _same(packed_p, p)
    _same(packed_s, s)


def test_refused_call_leaves_a_later_step_unaffected(net: bpc.CompiledNet) -> None:
    """After refusals the next good step gives what a step on untouched copies gives."""
    p, q = net.init(seed=5), net.init(seed=5)
    s, r = net.init_state(p), net.init_state(q)
    for spoil, error, _ in DATA_ABUSE.values():
        with pytest.raises(error):
            net.step(p, s, **spoil(data()))
    assert net.step(p, s, **data()) == net.step(q, r, **data())
    _same(p, q)
    _same(s, r)


# ---------------------------------------------------------------- non-finite

@pytest.mark.parametrize("bad", [np.inf, -np.inf, np.nan])
def test_step_refuses_non_finite_loss(net: bpc.CompiledNet, bad: float) -> None:
    p = net.init(seed=1)
    s = net.init_state(p)
    net.step(p, s, **data())
    d = data()
    d["t"][2, 1] = bad
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        message = refused(net, "step", p, s, d, BPNumericError)
    assert "loss" in message
    assert issubclass(BPNumericError, BPError)


SQRT_NET = """
param a[2] = ones
param b[2] = ones
param c[] = 1
loss sum(sqrt(a)) + sum(sqrt(b)) + c * c
optimize sgd(lr=0.1, momentum=0.9)
"""


@pytest.mark.parametrize("zeros,named", [("b", "b"), ("ab", "a"), ("a", "a")])
def test_step_names_first_non_finite_gradient(backend: str, zeros: str, named: str) -> None:
    """sqrt'(0) is inf while sqrt(0) is finite: the loss is fine, a gradient is not."""
    net = bpc.compile(SQRT_NET, backend=backend)
    p = net.init()
    s = net.init_state(p)
    net.step(p, s)
    for name in zeros:
        p[name][0] = 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        message = refused(net, "step", p, s, {}, BPNumericError)
    assert f"gradient of {named}" in message
    other = ({"a", "b"} - {named}).pop()
    assert f"gradient of {other}" not in message
    assert "loss" not in message.replace("step", "")


def test_diverging_run_stops_before_destroying_params(backend: str) -> None:
    """A huge lr blows the params up; the step whose loss overflows is refused, and the
    params it refused are still the finite values the previous step left."""
    text = open_example("regression.bp").replace("sgd(lr=0.1)", "sgd(lr=1e200)")
    net = bpc.compile(text, backend=backend)
    p = net.init()
    s = net.init_state(p)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((6, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for _ in range(10):
            before = snapshot(p, s)
            try:
                net.step(p, s, x=x, y=y)
            except BPNumericError as error:
                assert "loss" in str(error)
                break
        else:
            pytest.fail("a run with lr=1e200 never met a non-finite loss")
    assert snapshot(p, s) == before
    assert all(np.isfinite(v).all() for v in p.values())
    assert max(float(np.max(np.abs(v))) for v in p.values()) > 1e100


# ---------------------------------------------------------------- init

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_init_is_deterministic_contiguous_and_typed(backend: str, dtype: str) -> None:
    net = bpc.compile(NETWORK + "param V[4, 3, 2]\nparam H[3, 3] = he\n",
                      backend=backend, dtype=dtype)
    first, again, other = net.init(seed=11), net.init(seed=11), net.init(seed=12)
    assert list(first) == list(net.params)
    assert snapshot(first) == snapshot(again)
    for name, value in first.items():
        assert isinstance(value, np.ndarray)
        assert value.dtype == np.dtype(dtype), name
        assert value.shape == net.params[name], name
        assert value.flags.c_contiguous and value.flags.writeable and value.flags.owndata
        assert np.isfinite(value).all()
    for name in ("W", "b", "V", "H"):  # random kinds differ between seeds
        assert not np.array_equal(first[name], other[name]), name
    assert float(first["a"]) == 0.75
    # params are ready for step as they come
    net.step(first, net.init_state(first), **data())


def test_float32_init_is_float64_init_rounded(backend: str) -> None:
    n32 = bpc.compile(NETWORK, backend=backend, dtype="float32")
    n64 = bpc.compile(NETWORK, backend=backend, dtype="float64")
    for seed in (0, 1, 99):
        p32, p64 = n32.init(seed), n64.init(seed)
        for name in p64:
            np.testing.assert_array_equal(p32[name], p64[name].astype(np.float32))


def test_init_default_seed_is_zero() -> None:
    net = bpc.compile(NETWORK)
    assert snapshot(net.init()) == snapshot(net.init(seed=0))


def test_scalar_params_work_everywhere(backend: str) -> None:
    """`param a[]` is 0-d in init, forward, value_and_grad's gradient and step."""
    net = bpc.compile(NETWORK, backend=backend)
    p = net.init()
    assert p["a"].shape == ()
    _, g = net.value_and_grad(p, **data())
    assert g["a"].shape == ()
    s = net.init_state(p)
    assert s["a.m"].shape == () and s["step"].shape == ()
    net.step(p, s, **data())
    assert p["a"].shape == () and float(p["a"]) != 0.75
    # a Python float or a 0-d array is accepted as a scalar param by the read-only calls
    for value in (0.75, np.float64(0.75), np.array(0.75), np.array(0.75, np.float32)):
        q = {**net.init(), "a": value}
        _same(net.forward(q, **{k: v for k, v in data().items() if k != "t"}),
              net.forward(net.init(), **{k: v for k, v in data().items() if k != "t"}))


# ---------------------------------------------------------------- odd networks

NO_LOSS = """
input x[N, 2]
param W[2, 3] = normal(1)
y = x @ W
"""


@pytest.mark.parametrize("entry", ["loss", "value_and_grad", "step"])
def test_network_without_loss(backend: str, entry: str) -> None:
    net = bpc.compile(NO_LOSS, backend=backend)
    p = net.init()
    x = np.ones((3, 2))
    np.testing.assert_allclose(net.forward(p, x=x)["y"], x @ p["W"], rtol=1e-15)
    message = refused(net, entry, p, {}, {"x": x}, BPError)
    assert "loss" in message


NO_INPUTS = """
const TARGET = 3
param W[2, 2] = uniform(-1, 1)
param c[2] = 0.5
r = W @ c - TARGET
output r
loss sum(r ** 2)
optimize sgd(lr=0.05)
"""


def test_network_with_no_inputs(backend: str) -> None:
    net = bpc.compile(NO_INPUTS, backend=backend)
    assert net.inputs == {} and net.targets == {}
    p = net.init(seed=4)
    W, c = p["W"].copy(), p["c"].copy()
    r = W @ c - 3
    np.testing.assert_allclose(net.forward(p)["r"], r, rtol=1e-14)
    assert net.loss(p) == pytest.approx(float(np.sum(r ** 2)), rel=1e-14)
    loss, g = net.value_and_grad(p)
    np.testing.assert_allclose(g["W"], 2 * np.outer(r, c), rtol=1e-13)
    np.testing.assert_allclose(g["c"], 2 * W.T @ r, rtol=1e-13)
    s = net.init_state(p)
    assert net.step(p, s) == pytest.approx(loss, rel=1e-15)
    np.testing.assert_allclose(p["W"], W - 0.05 * g["W"], rtol=1e-14)
    np.testing.assert_allclose(p["c"], c - 0.05 * g["c"], rtol=1e-14)
    for entry in CALLS:
        refused(net, entry, p, s, {"x": np.ones(2)}, BPNameError)


def test_batch_of_one(backend: str) -> None:
    """xor's loss is a sum over rows, so the batch's loss and gradient are the sums of the
    one-row ones, and each row's output is the row of the batch's output."""
    net = bpc.compile(open_example("xor.bp"), backend=backend)
    p = net.init(seed=3)
    rng = np.random.default_rng(3)
    x, t = rng.standard_normal((5, 2)), rng.uniform(0, 1, (5, 1))
    full_y = net.forward(p, x=x)["y"]
    full_loss, full_g = net.value_and_grad(p, x=x, t=t)
    total_loss, total_g = 0.0, {k: np.zeros_like(v) for k, v in p.items()}
    for i in range(5):
        row_y = net.forward(p, x=x[i:i + 1])["y"]
        assert row_y.shape == (1, 1)
        np.testing.assert_allclose(row_y[0], full_y[i], rtol=1e-14)
        row_loss, row_g = net.value_and_grad(p, x=x[i:i + 1], t=t[i:i + 1])
        total_loss += row_loss
        for k in total_g:
            total_g[k] += row_g[k]
    assert total_loss == pytest.approx(full_loss, rel=1e-13)
    for k in total_g:
        np.testing.assert_allclose(total_g[k], full_g[k], rtol=1e-12, atol=1e-15)
    s = net.init_state(p)
    assert net.step(p, s, x=x[:1], t=t[:1]) > 0


def test_results_are_deterministic(backend: str) -> None:
    def run() -> list:
        net = bpc.compile(NETWORK, backend=backend)
        p = net.init(seed=8)
        s = net.init_state(p)
        losses = [net.step(p, s, **data(seed=k)) for k in range(5)]
        out = net.forward(p, **{k: v for k, v in data().items() if k != "t"})
        return [losses, snapshot(p, s, out), net.value_and_grad(p, **data())[0], net.code()]

    assert run() == run()


def test_outputs_are_arrays_of_the_net_dtype(net: bpc.CompiledNet) -> None:
    p = net.init()
    d = data()
    out = net.forward(p, x=d["x"], m=d["m"])
    assert set(out) == set(net.outputs) == {"y"}
    assert out["y"].dtype == net.dtype and out["y"].shape == (5, 2)
    loss, grads = net.value_and_grad(p, **d)
    assert isinstance(loss, float) and isinstance(net.loss(p, **d), float)
    for name, shape in net.params.items():
        assert grads[name].dtype == net.dtype and grads[name].shape == shape
