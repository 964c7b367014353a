# The studio app has no tables; this module exists because Django sends post_migrate only to apps with a models
# module, and the role groups are built on this (last) app's post_migrate (see apps.py).
