"""Agents of exitgym: REINFORCE, lexicographic constraint, ConsistentEE, SB3 glue, exit rules."""
