"""Helpers shared by the tests: running the command as a user does."""
