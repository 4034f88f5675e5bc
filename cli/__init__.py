"""shelf-cli, the terminal client."""
