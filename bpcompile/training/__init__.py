"""Training: minibatches, datasets, checkpoints, plots, and data-parallel Dask.

Takes a CompiledNet and data (an .npz, a .csv or a folder of .npy files); gives trained
params through the training loop (loop.py), with atomic checkpoints that resume exactly
(checkpoint.py), loss plots (plot.py) and a Dask cluster's workers sharing each step's
gradient (cluster.py).
"""
