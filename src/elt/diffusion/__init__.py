"""Diffusion (DiT paradigm) on the looped core."""
