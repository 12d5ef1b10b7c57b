"""bpcompile's version: a leaf, so that any module may import it without a cycle."""

__version__ = "0.1.0"
