"""Tests of the system room."""
