"""Ground-truth benchmark building: phantoms, a small generator, and the challenge layout writer."""
