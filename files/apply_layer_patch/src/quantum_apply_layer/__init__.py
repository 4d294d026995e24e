"""quantum-apply-layer: the execution gate that sends an order only when every gate passes."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("quantum-apply-layer")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"
