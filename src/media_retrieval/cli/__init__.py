"""Entry-point logic behind src/*.py."""
