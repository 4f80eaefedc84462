"""A fake of Yahoo's HTTP layer, so the real yfinance code builds the real frame shapes offline.

Patches `yfinance.data.YfData.get` (the one place yfinance 1.7 sends chart
requests) with canned chart JSON in Yahoo's format: `chart.result[0]` with
`meta`, `timestamp` and `indicators.quote/adjclose`, a bar on each NYSE session (no
weekends, no exchange holidays, as Yahoo serves a US listing). Unknown symbols get
Yahoo's 404 "No data found, symbol may be delisted"; symbols can be made to
rate-limit (the real layer raises YFRateLimitError on HTTP 429) or the whole
network can go offline (a connection error, as curl_cffi raises).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date

import numpy as np
import pandas as pd


class FakeResponse:
    def __init__(self, payload: dict, status: int = 200):
        self._payload = payload
        self.status_code = status
        self.text = json.dumps(payload)
        self.url = "https://query2.finance.yahoo.com/v8/finance/chart"

    def json(self) -> dict:
        return self._payload

    def raise_for_status(self) -> None:
        # what yfinance 1.7's curl_cffi session raises (not a subclass of requests.HTTPError: yfinance catches
        # this class, and a fake raising the other one escaped where the real error is caught)
        if self.status_code >= 400:
            from curl_cffi.requests.exceptions import HTTPError

            raise HTTPError(f"HTTP Error {self.status_code}: ", 0, self)


def _nyse_sessions(low: pd.Timestamp, high: pd.Timestamp) -> list[date]:
    """NYSE's sessions from `low` to `high` (midnights), within the years exchange_calendars knows."""
    import exchange_calendars as xcals

    nyse = xcals.get_calendar("XNYS", start="1990-01-01")
    low, high = max(low, nyse.first_session), min(high, nyse.last_session)
    return [d.date() for d in nyse.sessions_in_range(low, high)] if low <= high else []


def price_path(symbol: str, days: list[date]) -> np.ndarray:
    """A deterministic price per (symbol, day): the same day always gets the same price."""
    seed = sum(ord(c) for c in symbol)
    ordinals = np.array([d.toordinal() for d in days], dtype=np.float64)
    return 50.0 + seed % 40 + 10 * np.sin(ordinals / 17.0 + seed)


@dataclass
class FakeYahoo:
    listed: dict[str, tuple[date, date]]  # symbol -> (first, last) trading day served
    offline: bool = False
    rate_limited: dict[str, int] = field(default_factory=dict)  # symbol -> how many more 429s
    revised: dict[tuple[str, date], float] = field(default_factory=dict)  # (symbol, day) -> close override
    # symbol -> (day, close factor, adjusted close factor): the days before `day` served times the factors, as
    # Yahoo serves them until an event on `day` rebases its history (a 2:1 split: (day, 2, 2) until Yahoo
    # applies it; a dividend D at price P: (day, 1, 1 / (1 - D / P)), the adjusted close not yet lowered)
    before: dict[str, tuple[date, float, float]] = field(default_factory=dict)
    calls: list[tuple[str, dict]] = field(default_factory=list)

    def chart(self, symbol: str, start: pd.Timestamp, end: pd.Timestamp) -> dict:
        first, last = self.listed[symbol]
        # NYSE's sessions, as Yahoo serves a US listing's daily bars: no weekends, no exchange holidays
        days = _nyse_sessions(max(start, pd.Timestamp(first)).normalize(), min(end, pd.Timestamp(last)).normalize())
        days = [d for d in days if pd.Timestamp(d) < end]
        close = price_path(symbol, days)
        for i, d in enumerate(days):
            close[i] = self.revised.get((symbol, d), close[i])
        event, close_factor, adj_factor = self.before.get(symbol, (date.min, 1.0, 1.0))
        earlier = np.array([d < event for d in days], dtype=bool)
        close = np.where(earlier, close * close_factor, close)
        adj_factor = np.where(earlier, adj_factor / close_factor, 1.0)  # of the close served
        stamps = [
            int(pd.Timestamp(d).tz_localize("America/New_York").replace(hour=9, minute=30).timestamp()) for d in days
        ]
        index = symbol.startswith("^")  # as Yahoo serves ^GSPC and ^VIX: an index, its own exchange, no dividends
        meta = {
            "currency": "USD",
            "symbol": symbol,
            "exchangeName": "SNP" if index else "NMS",
            "fullExchangeName": "SNP" if index else "NasdaqGS",
            "instrumentType": "INDEX" if index else "EQUITY",
            "firstTradeDate": 345479400,
            "regularMarketTime": stamps[-1] if stamps else 0,
            "hasPrePostMarketData": True,
            "gmtoffset": -18000,
            "timezone": "EST",
            "exchangeTimezoneName": "America/New_York",
            "priceHint": 2,
            "dataGranularity": "1d",
            "range": "",
            "validRanges": ["1d", "5d", "1mo", "3mo", "6mo", "1y", "2y", "5y", "10y", "ytd", "max"],
        }
        quote = {
            "open": list(close - 0.5),
            "high": list(close + 1.0),
            "low": list(close - 1.0),
            "close": list(close),
            "volume": [0 if symbol == "^VIX" else 1_000_000] * len(days),  # Yahoo reports no volume for the VIX
        }
        adjusted = close * adj_factor * (1.0 if index else 0.99)
        indicators = {"quote": [quote], "adjclose": [{"adjclose": list(adjusted)}]}
        result = {"meta": meta, "timestamp": stamps, "indicators": indicators}
        if not days:  # Yahoo's answer for a range with no bar: no `timestamp` key and empty indicator objects
            result = {"meta": meta, "indicators": {"quote": [{}], "adjclose": [{}]}}
        return {"chart": {"result": [result], "error": None}}

    def get(self, _yfdata, url: str, params: dict | None = None, timeout: float = 30) -> FakeResponse:
        params = dict(params or {})
        self.calls.append((url, params))
        if self.offline:
            from curl_cffi.requests.exceptions import ConnectionError as CurlConnectionError

            raise CurlConnectionError("Failed to perform, curl: (6) Could not resolve host: query2.finance.yahoo.com")
        symbol = url.rstrip("/").rsplit("/", 1)[-1]
        if "/v8/finance/chart/" not in url or symbol not in self.listed:
            return FakeResponse(
                {
                    "chart": {
                        "result": None,
                        "error": {"code": "Not Found", "description": "No data found, symbol may be delisted"},
                    }
                },
                404,
            )
        if self.rate_limited.get(symbol, 0) > 0:
            from yfinance.exceptions import YFRateLimitError

            self.rate_limited[symbol] -= 1
            raise YFRateLimitError()
        if "period1" in params:
            start = pd.Timestamp(params["period1"], unit="s")
            end = pd.Timestamp(params["period2"], unit="s")
        else:  # the timezone probe (range=1d)
            last = self.listed[symbol][1]
            start, end = pd.Timestamp(last), pd.Timestamp(last) + pd.Timedelta(days=1)
        return FakeResponse(self.chart(symbol, start, end))

    def history_requests(self, symbol: str) -> list[dict]:
        return [p for u, p in self.calls if u.endswith(f"/{symbol}") and "period1" in p]

    def install(self, monkeypatch, cache_dir) -> FakeYahoo:
        from yfinance.data import YfData

        from features.prices.yahoo import configure_cache

        fake = self

        def get(yfdata, url, params=None, timeout=30):
            return fake.get(yfdata, url, params, timeout)

        monkeypatch.setattr(YfData, "get", get)
        configure_cache(cache_dir)  # the product's own call, which also drops yfinance's first handles
        return self
