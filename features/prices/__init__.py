"""Prices: downloaded from Yahoo (`yahoo`), read from files or the bundled sample (`sources`), checked
(`validate`, `schema`), kept in the Parquet lake (`lake`), brought up to date (`ingest`), judged healthy for
training (`health`), on the exchange's calendar (`calendar`)."""
