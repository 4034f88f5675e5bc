"""shelf, the desktop client."""
