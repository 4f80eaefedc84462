"""Model, training, prediction, baselines, evaluation, metrics and publishing.

Plain functions over numpy arrays, tensors and polars frames; depends on
`features`, never on Prefect or `flows`.
"""
