"""Tests of the offline engine and training sets."""
