"""Helpers for tests of this framework and of users' transforms and sinks."""
