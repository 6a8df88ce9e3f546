"""Tests of the file formats room (protocol/formats): label files on disk, their geometry."""
