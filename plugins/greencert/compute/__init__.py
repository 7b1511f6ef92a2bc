"""Unit-safe computation of energy, tokens and carbon from a validated bundle."""
