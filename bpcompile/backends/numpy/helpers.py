"""Small functions the generated NumPy module defines when its code calls them. Each is the
stable form of its math (max-shifted softmax, overflow-free sigmoid)."""

from __future__ import annotations

HELPERS: dict[str, str] = {
    "sigmoid": '''def sigmoid(x):
    """1 / (1 + exp(-x)); exp(-x) may overflow to inf for very negative x, giving exactly 0."""
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-x))''',
    "elu": '''def elu(x, alpha):
    """x where x > 0, else alpha * (exp(x) - 1); exp only sees x <= 0, so cannot overflow."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))''',
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

# helper -> helpers it calls
NEEDS: dict[str, tuple[str, ...]] = {"cross_entropy": ("log_softmax",)}


def helper_closure(names: set[str]) -> list[str]:
    """`names` and what they call, in the order HELPERS lists them."""
    wanted = set(names)
    for name in names:
        wanted.update(NEEDS.get(name, ()))
    return [name for name in HELPERS if name in wanted]
