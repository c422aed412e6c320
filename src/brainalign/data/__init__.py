"""Data: NSD in its release layout (ingest, stimuli, captions, noise ceilings) and the embedded mini-NSD."""
