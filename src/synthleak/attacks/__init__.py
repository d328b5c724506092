"""Attacks: turn features of real and synthetic images into membership scores."""
