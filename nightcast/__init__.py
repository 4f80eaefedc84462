"""What every layer shares: the error hierarchy (`errors`), atomic file writes (`io`), the settings base
(`settings`) and the package version with the feature-code hash (`version`). Imports nothing of the project.

Dependencies point one way: `flows -> forecasting -> features -> nightcast`.
"""
