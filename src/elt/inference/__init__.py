"""Inference: loading trained generators, exporting them and sharing them (Hub folders)."""
