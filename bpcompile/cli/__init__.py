"""The `bpcompile` command: one module per subcommand, and main.py, which parses the
command line and turns every BPError into a message and exit status 2 (never a
traceback). Takes arguments; gives files and text, through the public API.
"""
