"""Tests of the plugin room."""
