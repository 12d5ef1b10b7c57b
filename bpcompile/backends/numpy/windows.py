"""The generated module's convolution and pooling helpers, vectorized through NumPy's
sliding windows: a window per output position is a strided view (no copy), a convolution is
one einsum over the windows, and each gradient loops only over the kernel's taps (25 for a
5x5 kernel), never over the batch, the channels or the pixels. One rank-generic helper per
op serves conv1d and conv2d alike."""

from __future__ import annotations

WINDOW_HELPERS: dict[str, str] = {
    "windows": '''def windows(x, kernel, stride, padding, dilation, fill=0.0):
    """Every window of x's spatial axes, [N, C, *out, *kernel], as a view of x padded with
    `fill`: window (i, j) starts at (i * stride, j * stride) and steps by `dilation`."""
    d = len(kernel)
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding], constant_values=fill)
    span = tuple(dl * (k - 1) + 1 for k, dl in zip(kernel, dilation))
    view = np.lib.stride_tricks.sliding_window_view(padded, span, axis=tuple(range(2, 2 + d)))
    starts = tuple(slice(None, None, s) for s in stride)
    taps = tuple(slice(None, None, dl) for dl in dilation)
    return view[(slice(None), slice(None)) + starts + taps]''',
    "conv": '''def conv(x, W, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """torch.nn.functional.conv1d/conv2d: x [N, C, *size] correlated with W [O, C/groups,
    *kernel], giving [N, O, *out]."""
    d = W.ndim - 2
    stride, padding, dilation = stride[:d], padding[:d], dilation[:d]  # conv1d: one each
    n, c, o = x.shape[0], x.shape[1], W.shape[0]
    win = windows(x, W.shape[2:], stride, padding, dilation)
    out = win.shape[2:2 + d]
    win = win.reshape(n, groups, c // groups, *out, *W.shape[2:])
    kernel = W.reshape(groups, o // groups, c // groups, *W.shape[2:])
    at, taps = "hw"[:d], "ij"[:d]
    y = np.einsum(f"ngc{at}{taps},goc{taps}->ngo{at}", win, kernel, optimize=True)
    return y.reshape(n, o, *out)''',
    "conv_transpose": '''def conv_transpose(g, W, shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                   groups=1):
    """conv's gradient with respect to its input of `shape`: each kernel tap's share of g
    added back where that tap read (a transposed convolution)."""
    d = W.ndim - 2
    stride, padding, dilation = stride[:d], padding[:d], dilation[:d]
    n, c, o = shape[0], shape[1], W.shape[0]
    size = [m + 2 * p for m, p in zip(shape[2:], padding)]
    dx = np.zeros((n, groups, c // groups, *size), dtype=DTYPE)
    gg = g.reshape(n, groups, o // groups, *g.shape[2:])
    kernel = W.reshape(groups, o // groups, c // groups, *W.shape[2:])
    at = "hw"[:d]
    for tap in np.ndindex(*W.shape[2:]):
        part = np.einsum(f"ngo{at},goc->ngc{at}", gg, kernel[(Ellipsis, *tap)])
        reads = tuple(slice(t * dl, t * dl + s * (m - 1) + 1, s)
                      for t, dl, s, m in zip(tap, dilation, stride, g.shape[2:]))
        dx[(slice(None), slice(None), slice(None)) + reads] += part
    inside = tuple(slice(p, p + m) for p, m in zip(padding, shape[2:]))
    return dx.reshape(n, c, *size)[(slice(None), slice(None)) + inside]''',
    "correlate": '''def correlate(x, g, shape, stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1):
    """conv's gradient with respect to its kernel of `shape`: x's windows weighted by g,
    summed over the batch and the positions."""
    d = len(shape) - 2
    stride, padding, dilation = stride[:d], padding[:d], dilation[:d]
    n, c, o = x.shape[0], x.shape[1], shape[0]
    win = windows(x, shape[2:], stride, padding, dilation)
    win = win.reshape(n, groups, c // groups, *g.shape[2:], *shape[2:])
    gg = g.reshape(n, groups, o // groups, *g.shape[2:])
    at, taps = "hw"[:d], "ij"[:d]
    dW = np.einsum(f"ngc{at}{taps},ngo{at}->goc{taps}", win, gg, optimize=True)
    return dW.reshape(shape)''',
    "max_pool": '''def max_pool(x, kernel, stride=None, padding=(0, 0)):
    """The largest value of each window (padding never wins: it is -inf)."""
    d = len(kernel)
    win = windows(x, kernel, stride or kernel, padding[:d], (1,) * d, fill=-np.inf)
    return win.max(axis=tuple(range(-d, 0)))''',
    "avg_pool": '''def avg_pool(x, kernel, stride=None, padding=(0, 0)):
    """The mean of each window, padding counted (PyTorch's count_include_pad)."""
    d = len(kernel)
    win = windows(x, kernel, stride or kernel, padding[:d], (1,) * d)
    return win.mean(axis=tuple(range(-d, 0)))''',
    "max_pool_grad": '''def max_pool_grad(x, g, kernel, stride=None, padding=(0, 0)):
    """max_pool's gradient: each window's g to its first maximum in row-major order (as
    PyTorch on CPU), added where windows overlap."""
    d = len(kernel)
    stride = stride or kernel
    win = windows(x, kernel, stride, padding[:d], (1,) * d, fill=-np.inf)
    flat = win.reshape(*win.shape[:2 + d], -1)
    first = np.argmax(flat, axis=-1)
    return spread(g, first, x.shape, kernel, stride, padding[:d])''',
    "avg_pool_grad": '''def avg_pool_grad(x, g, kernel, stride=None, padding=(0, 0)):
    """avg_pool's gradient: each window's g spread evenly over it, padding included."""
    d = len(kernel)
    share = g / np.prod(kernel)
    return spread(share, None, x.shape, kernel, stride or kernel, padding[:d])''',
    "spread": '''def spread(g, first, shape, kernel, stride, padding):
    """g of each window added into zeros of `shape` at every tap of the window (first=None)
    or only at the tap `first` names."""
    d = len(kernel)
    size = [m + 2 * p for m, p in zip(shape[2:], padding)]
    dx = np.zeros((*shape[:2], *size), dtype=DTYPE)
    for k, tap in enumerate(np.ndindex(*kernel)):
        part = g if first is None else np.where(first == k, g, 0)
        reads = tuple(slice(t, t + s * (m - 1) + 1, s)
                      for t, s, m in zip(tap, stride, g.shape[2:]))
        dx[(slice(None), slice(None)) + reads] += part
    inside = tuple(slice(p, p + m) for p, m in zip(padding, shape[2:]))
    return dx[(slice(None), slice(None)) + inside]''',
}

WINDOW_NEEDS: dict[str, tuple[str, ...]] = {
    "conv": ("windows",), "correlate": ("windows",), "max_pool": ("windows",),
    "avg_pool": ("windows",), "max_pool_grad": ("windows", "spread"),
    "avg_pool_grad": ("spread",),
}
