"""The command line's exit codes (the epilog of `chaos-inject --help` explains them to users)."""

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_UNSUPPORTED, EXIT_NO_EFFECT = 0, 1, 2, 3, 4
