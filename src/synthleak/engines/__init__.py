"""Engines that decode images and extract features outside this process (optional extras)."""
