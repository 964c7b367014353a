"""Trainers that produce the studio's demo networks (run on a GPU; see docs/demo-model.md)."""
