"""Seeing the math: everything that lets a person check what bpcompile derived.

Takes a CompiledNet; gives `show` (each gradient as math and as code), `chain` (the
textbook delta chain), `explain` (a small network's gradients unrolled into scalars),
`picture` (the graph as DOT, Mermaid, SVG or PNG), `notebook` (LaTeX), `gradcheck` (central
differences) and `health` (vanishing and exploding gradients).
"""
