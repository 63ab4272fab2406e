"""Structured-config schemas: the types of the config blocks every entry point shares, and the
valid values of each choice, checked when the config is composed (well under a second, before
torch is imported) instead of minutes into a run.

Registered in Hydra's ConfigStore under ``schema/`` by :func:`register`; each block's YAML names
its schema in its defaults list (``/schema/data/folder@_here_``), so Hydra merges the YAML onto
the typed node: a wrong type (``data.clip.frames=abc``) or an unknown key fails at composition.
Datasets and models extend the shared blocks with schemas of their own (subclasses). Choices are
plain strings in the config (enum
values would reach checkpoints, which load only plain types): :func:`check_choices` checks them
right after composition, from the tuples here, which the code that uses each value imports.

By concern: :mod:`.data`, :mod:`.model`, :mod:`.retrieval`, :mod:`.index`, :mod:`.paths`;
:mod:`.store` registers them. None imports torch (a test checks).
"""
