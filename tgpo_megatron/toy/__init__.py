"""The paper at toy scale: `tgpo demo` and `tgpo study`, clients of the `tgpo` commands (they run them as
subprocesses) with their recipes."""
