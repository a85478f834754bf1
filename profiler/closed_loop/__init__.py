"""Closing the loop on a CPU: profile a small model, replay a trace on the profile, and
serve the same trace on a real continuous-batching engine built from the same operators."""
