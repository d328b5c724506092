"""Neural network building blocks and safe checkpoint I/O."""
