"""Shipping a trained network: takes a CompiledNet and its trained params; gives a standalone
NumPy module that holds them (numpy_module.py), importable with bpcompile absent.
"""
