"""The binding's version; it follows the C library's SPARKV_VERSION_* (checked in the tests)."""

__version__ = "0.1.0"
