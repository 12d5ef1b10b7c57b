"""Differentiation: the forward Graph -> the training Graph.

Takes a forward graph with a loss; gives the graph with each param's gradient (autodiff.py:
reverse mode, vector-Jacobian rules in a table keyed by op) and the optimizer's update of
every param and state entry (optimizers.py). Elementwise derivatives come from SymPy, in the
cheapest form that is an identity (symbolic.py).
"""
