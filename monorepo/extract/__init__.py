"""The one extractor: every archive the tool opens, checked by one set of rules."""
