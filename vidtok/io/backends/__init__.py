"""Decoder backends behind :class:`vidtok.io.Video`. Each module imports its library lazily (inside the reader)."""
