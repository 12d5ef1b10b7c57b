"""The IR: a small enum of ops and frozen nodes in topological order, and what every later
stage reads it with.

Takes nothing from other stages; gives the Graph (ir.py), shapes (shapes.py), the IR's own
SymPy functions (functions.py), the lowered Network and its declarations (network.py), the
one naming source for values (naming.py), and the one spelling of nodes and expressions
for NumPy code and for people (spelling.py, expressions.py).
"""
