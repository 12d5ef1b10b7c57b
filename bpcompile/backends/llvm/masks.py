"""Dropout's masks drawn in native code, element for element as runtime/randomness.py draws
them in NumPy: output `index` of SplitMix64 started at a key, the key itself two outputs
deep (the seed's stream at the step count, then that stream at the dropout's site). The
fast step (fastcall.py) and the exported C library (export/c_abi.py) draw them so."""

from __future__ import annotations

from llvmlite import ir

from ...runtime.randomness import GAMMA, threshold
from .loops import for_range, i64

MIX = (0xBF58476D1CE4E5B9, 0x94D049BB133111EB)  # SplitMix64's multipliers (randomness.py)


def output(b: ir.IRBuilder, seed: ir.Value, index: ir.Value) -> ir.Value:
    """Output number `index` of SplitMix64 started at `seed` (randomness.output)."""
    z = b.add(seed, b.mul(b.add(index, i64(1)), i64(_signed(GAMMA))))
    z = b.mul(b.xor(z, b.lshr(z, i64(30))), i64(_signed(MIX[0])))
    z = b.mul(b.xor(z, b.lshr(z, i64(27))), i64(_signed(MIX[1])))
    return b.xor(z, b.lshr(z, i64(31)))


def draw_mask(b: ir.IRBuilder, t: ir.Type, seed: ir.Value, step: ir.Value, mask: ir.Value,
              site: int, rate: float, count: ir.Value) -> None:
    """One dropout's `count` mask values at `mask`, as randomness.draw_mask draws them for
    `seed` and step count `step`: 0 where dropped, 1 / (1 - rate) elsewhere."""
    key = output(b, output(b, seed, step), i64(site))
    scale = ir.Constant(t, 0.0 if rate >= 1 else 1.0 / (1.0 - rate))
    with for_range(b, count, "element") as i:
        bits = output(b, key, i)
        kept = b.icmp_unsigned(">=", b.lshr(bits, i64(11)), i64(threshold(rate)))
        b.store(b.select(kept, scale, ir.Constant(t, 0.0)), b.gep(mask, [i], source_etype=t))


def _signed(value: int) -> int:
    """A 64-bit pattern as the signed constant LLVM prints."""
    return value - (1 << 64) if value >= 1 << 63 else value
