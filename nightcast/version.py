"""What version of the feature code built a result: the package version plus a hash of the code itself.

Cached features are keyed on it, so an upgrade (or a local edit) that changes how a feature is computed
never serves features built by the old code.
"""

from __future__ import annotations

import hashlib
from functools import cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def package_version() -> str:
    try:
        return version("nightcast")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "0+unknown"


FEATURE_CODE = Path(__file__).resolve().parents[1] / "features"  # what computes features: not `features.prices`


def code_hash(package: Path | None = None) -> str:
    """Hash of the modules directly in a package directory (default: `features`, the code that computes
    features; the price plumbing in `features/prices` changes data, which the lake fingerprint covers)."""
    return _hash(package or FEATURE_CODE)


@cache
def _hash(package: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(package).glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def feature_code_version() -> str:
    return f"{package_version()}+{code_hash()}"
