"""Masked-token generation (MaskGIT / MAGVIT paradigm) on the looped core."""
