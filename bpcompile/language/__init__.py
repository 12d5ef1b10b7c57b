"""The `.bp` language: text -> AST -> the forward Graph of a Network.

Takes `.bp` source text; gives a Network (graph/network.py): the forward graph (outputs and
loss, shapes inferred and checked, NumPy broadcasting) and the declarations (params with
their inits, inputs, targets, the optimizer). Every bad program is a located BPError.

    grammar.lark    the grammar          parser.py       text -> AST (syntax.py)
    lower.py        statements -> graph  expressions.py  expressions -> nodes
    calls.py        built-in calls       layers.py       layer sugar (dense)
    defs.py         user `def`s          builtins.py     the elementwise vocabulary in SymPy
    declarations.py initializers and optimizer options
    arguments.py    binding call arguments, checking option values
    context.py      what handlers see of the lowering in progress
"""
