"""Carbon accounting: grid sources, market-based matching, embodied carbon, SCI (docs/carbon.md)."""
