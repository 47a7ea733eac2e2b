"""Serving trained runs: the HTTP app, its web page and Grad-CAM explanations."""
