"""tsyncd: a time synchronization daemon (NTPv4 client and server)."""

__version__ = "0.1.0"
