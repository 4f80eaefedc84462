"""Everything before the model. `features.prices`: where prices come from and are kept (Yahoo downloads,
files, the bundled sample, validation, the lake, ingest, data health, the exchange calendar). The rest:
causal denoising, the feature catalogue and its engine, window kernels, windows and splits.

Plain functions over polars frames and numpy arrays; this package never imports Prefect or anything from
`forecasting` / `flows`.
"""
