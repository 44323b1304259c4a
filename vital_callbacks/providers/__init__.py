"""Every provider quirk in one place: usage readers, model and provider names, tiktoken encodings."""
