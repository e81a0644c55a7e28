"""Data: sources, embedded suite, tokenizer, span corruption and packing."""
