"""Thin `shopmail` commands; each calls into the module that owns the capability."""
