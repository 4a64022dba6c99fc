"""`make bench`: tglogin measured side by side with what its stack does bare (SPEC "Benchmarks")."""
