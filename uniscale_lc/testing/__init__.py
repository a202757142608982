"""Test helpers: stand-in servers that let the suite run offline on 127.0.0.1."""
