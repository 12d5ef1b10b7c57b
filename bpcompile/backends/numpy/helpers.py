"""Small functions the generated NumPy module defines when its code calls them. Each is the
stable form of its math (max-shifted softmax, overflow-free sigmoid)."""

from __future__ import annotations

from .windows import WINDOW_HELPERS, WINDOW_NEEDS

HELPERS: dict[str, str] = {
    "sigmoid": '''def sigmoid(x):
    """1 / (1 + exp(-x)); exp(-x) may overflow to inf for very negative x, giving exactly 0."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))''',
    "elu": '''def elu(x, alpha):
    """x where x > 0, else alpha * (exp(x) - 1); exp only sees x <= 0, so cannot overflow."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))''',
    "erf": '''def erf(x):
    """The error function to float64's precision, as NumPy has none: below |x| = 3 the series
    2 / sqrt(pi) * exp(-x**2) * sum(2**n * x**(2n+1) / (1 * 3 * ... * (2n+1))), whose terms
    are all positive, so nothing cancels; above, 1 - erfc(x) by erfc's continued fraction
    (erf is 1 in float64 beyond 6)."""
    a = np.minimum(np.abs(x), 6.0)
    term = a
    total = a
    for n in range(1, 80):
        term = term * (2 * a * a) / (2 * n + 1)
        total = total + term
    series = 2 / np.sqrt(np.pi) * np.exp(-a * a) * total
    tail = np.maximum(a, 3.0)
    fraction = tail
    for k in range(60, 0, -1):
        fraction = tail + (k / 2) / fraction
    far = 1 - np.exp(-tail * tail) / np.sqrt(np.pi) / fraction
    return np.sign(x) * np.where(a < 3, series, far)''',
    "softmax": '''def softmax(x, axis):
    """exp(x) / sum(exp(x)) along axis, shifted by the max so exp cannot overflow."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)''',
    "log_softmax": '''def log_softmax(x, axis):
    """log(softmax(x)) along axis, computed without forming softmax: finite for any logits."""
    shifted = x - np.max(x, axis=axis, keepdims=True)
    return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))''',
    "logsumexp": '''def logsumexp(x, axis, keepdims=False):
    """log(sum(exp(x))) over axis, shifted by the max so exp cannot overflow."""
    m = np.max(x, axis=axis, keepdims=True)
    total = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return total if keepdims else np.squeeze(total, axis=axis)''',
    "cross_entropy": '''def cross_entropy(logits, t):
    """Mean over rows of -sum(t * log_softmax(logits)) along the last axis."""
    rows = logits.size // logits.shape[-1]
    return -np.sum(t * log_softmax(logits, axis=-1)) / rows''',
    "onehot_argmax": '''def onehot_argmax(x, axis):
    """1 at the first maximum along axis (an int or tuple), 0 elsewhere: max's gradient."""
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    last = tuple(range(-len(axes), 0))
    moved = np.moveaxis(x, axes, last)
    flat = moved.reshape(moved.shape[: moved.ndim - len(axes)] + (-1,))
    onehot = np.zeros_like(flat)
    np.put_along_axis(onehot, np.argmax(flat, axis=-1)[..., None], 1, axis=-1)
    return np.moveaxis(onehot.reshape(moved.shape), last, axes)''',
    "onehot": '''def onehot(t, classes):
    """Rows of 0s with a 1 at each class index of t (checked before the call)."""
    return (t[..., None] == np.arange(classes)).astype(DTYPE)''',
    "take": '''def take(table, index, axis):
    """numpy.take, the index's whole numbers (checked before the call) as integers."""
    return np.take(table, index.astype(np.intp), axis=axis)''',
    "scatter_add": '''def scatter_add(g, index, shape, axis):
    """g added into zeros of `shape` at the rows `index` names (a row named twice gets
    both): take's gradient."""
    out = np.zeros(shape, dtype=DTYPE)
    np.add.at(out, (slice(None),) * axis + (index.astype(np.intp),), g)
    return out''',
    "unslice": '''def unslice(g, shape, index):
    """g scattered into zeros of `shape` at `index` (np.s_[...]): a slice's gradient."""
    out = np.zeros(shape, dtype=DTYPE)
    out[index] = g
    return out''',
    "fans": '''def fans(shape):
    """(fan_in, fan_out) of a weight laid out [in, out, *receptive field]."""
    if len(shape) < 2:
        size = shape[0] if shape else 1
        return size, size
    receptive = int(np.prod(shape[2:]))
    return shape[0] * receptive, shape[1] * receptive''',
    "xavier": '''def xavier(rng, shape):
    """Glorot uniform: U(-b, b) with b = sqrt(6 / (fan_in + fan_out)), drawn in float64."""
    fan_in, fan_out = fans(shape)
    bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return rng.uniform(-bound, bound, size=shape).astype(DTYPE)''',
    "he": '''def he(rng, shape):
    """Kaiming normal, fan-in: N(0, 2 / fan_in), drawn in float64."""
    std = float(np.sqrt(2.0 / fans(shape)[0]))
    return rng.normal(0.0, std, size=shape).astype(DTYPE)''',
    "refuse_non_finite": '''def refuse_non_finite(loss, grads, call="step"):
    """Raise NonFiniteError naming the loss or the first gradient that is not finite."""
    if not np.isfinite(loss):
        raise NonFiniteError(f"the loss is {loss}; {call} changed nothing")
    for name, grad in grads.items():
        if not np.isfinite(grad).all():
            raise NonFiniteError(
                f"the gradient of {name} is not finite; {call} changed nothing"
            )''',
}

HELPERS.update(WINDOW_HELPERS)

# helper -> helpers it calls
NEEDS: dict[str, tuple[str, ...]] = {
    "cross_entropy": ("log_softmax",), "xavier": ("fans",), "he": ("fans",),
    **WINDOW_NEEDS,
}


def helper_closure(names: set[str]) -> list[str]:
    """`names` and what they call, in the order HELPERS lists them."""
    wanted = set(names)
    for name in names:
        wanted.update(NEEDS.get(name, ()))
    return [name for name in HELPERS if name in wanted]
