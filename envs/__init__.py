"""Gymnasium environments of exitgym: early exit, block skipping, reward shapes, vector envs."""
