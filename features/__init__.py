"""Everything before the model: sources, validation, lake, denoising, features, windows.

Plain functions over polars frames and numpy arrays; this package never imports
Prefect or anything from `forecasting` / `flows`.
"""
