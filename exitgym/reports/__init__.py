"""Reports: comparison summaries (Pareto fronts, AUC), markdown and plots of runs and comparisons.

Pure functions over result rows and files; below :mod:`exitgym.experiments`, which calls them.
"""
