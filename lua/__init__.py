"""Lua scripts of the reservation engine, shipped as package data (see engine/scripts.py)."""
