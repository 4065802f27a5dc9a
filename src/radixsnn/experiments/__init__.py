"""Experiments on top of the exact pipeline: the paper's figures, tables and baselines.

================  ====================================================================
``activations``   the ReLU activations of a float network (traced, recorded per batch)
``coding_error``  radix vs rate coding error on real activations (Fig. 3)
``rate``          the rate-coded integrate-and-fire conversion baseline
``sweep``         accuracy and efficiency against T and weight bits (Fig. 4)
``cost``          the paper's cost model: table operations, latency, energy
``report``        Tables 2 and 3 with the paper's cells beside ours
``recipes``       one TOML recipe per paper row
``reference``     the README's results table and docs/reference.md, from docs/results/
``plotting``      the figures (matplotlib, optional)
``demo``          the whole pipeline in a few minutes
================  ====================================================================
"""
