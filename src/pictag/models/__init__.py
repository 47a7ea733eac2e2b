"""Models: a timm backbone (and where its weights come from) plus named heads."""
